#include "core/profile.h"

#ifdef TESSERA_WITH_NVTX
#include <nvtx3/nvToolsExt.h>
#endif

namespace tessera {

#ifdef TESSERA_WITH_NVTX

namespace {

// A colour per name, so that each kind of range keeps its colour on the timeline.
uint32_t colour_of(const char* name) {
  static constexpr uint32_t kPalette[] = {0xff4e79a7, 0xfff28e2b, 0xffe15759, 0xff76b7b2,
                                          0xff59a14f, 0xffedc948, 0xffb07aa1, 0xffff9da7};
  uint32_t h = 2166136261u;  // FNV-1a
  for (const char* c = name; *c; ++c) h = (h ^ static_cast<unsigned char>(*c)) * 16777619u;
  return kPalette[h % (sizeof kPalette / sizeof kPalette[0])];
}

}  // namespace

ProfileRange::ProfileRange(const char* name, int64_t index) {
  nvtxEventAttributes_t a{};
  a.version = NVTX_VERSION;
  a.size = NVTX_EVENT_ATTRIB_STRUCT_SIZE;
  a.colorType = NVTX_COLOR_ARGB;
  a.color = colour_of(name);
  a.messageType = NVTX_MESSAGE_TYPE_ASCII;
  a.message.ascii = name;
  if (index >= 0) {
    a.payloadType = NVTX_PAYLOAD_TYPE_INT64;
    a.payload.llValue = index;
  }
  nvtxRangePushEx(&a);
}

void ProfileRange::end() {
  if (open_) nvtxRangePop();
  open_ = false;
}

#else

ProfileRange::ProfileRange(const char*, int64_t) {}
void ProfileRange::end() {
  open_ = false;
}

#endif

}  // namespace tessera
