// An NVTX tool for tests, loaded as Nsight Systems loads its own: NVTX opens the library that
// NVTX_INJECTION64_PATH names and calls its InitializeInjectionNvtx2, which here takes over the
// range calls. Each push and pop is appended to the file TESSERA_NVTX_LOG names, one line each:
// "push THREAD PAYLOAD NAME" (PAYLOAD - when the range has none) and "pop THREAD".
#include <nvtx3/nvToolsExt.h>

#include <pthread.h>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace {

std::mutex g_mutex;
std::FILE* g_log = nullptr;

unsigned long thread_id() {
  return static_cast<unsigned long>(pthread_self());
}

int push_ex(const nvtxEventAttributes_t* a) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  const char* name = a->messageType == NVTX_MESSAGE_TYPE_ASCII ? a->message.ascii : "?";
  if (a->payloadType == NVTX_PAYLOAD_TYPE_INT64)
    std::fprintf(g_log, "push %lu %" PRId64 " %s\n", thread_id(),
                 static_cast<int64_t>(a->payload.llValue), name);
  else
    std::fprintf(g_log, "push %lu - %s\n", thread_id(), name);
  std::fflush(g_log);
  return 0;
}

int push_a(const char* name) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  std::fprintf(g_log, "push %lu - %s\n", thread_id(), name);
  std::fflush(g_log);
  return 0;
}

int pop() {
  const std::lock_guard<std::mutex> lock(g_mutex);
  std::fprintf(g_log, "pop %lu\n", thread_id());
  std::fflush(g_log);
  return 0;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int InitializeInjectionNvtx2(
    NvtxGetExportTableFunc_t get_export_table) {
  const char* path = std::getenv("TESSERA_NVTX_LOG");
  if (!path || !(g_log = std::fopen(path, "a"))) return 0;
  const auto* callbacks =
      static_cast<const NvtxExportTableCallbacks*>(get_export_table(NVTX_ETID_CALLBACKS));
  NvtxFunctionTable table = nullptr;
  unsigned int size = 0;
  if (!callbacks || !callbacks->GetModuleFunctionTable(NVTX_CB_MODULE_CORE, &table, &size) ||
      size <= NVTX_CBID_CORE_RangePop)
    return 0;
  *table[NVTX_CBID_CORE_RangePushEx] = reinterpret_cast<NvtxFunctionPointer>(push_ex);
  *table[NVTX_CBID_CORE_RangePushA] = reinterpret_cast<NvtxFunctionPointer>(push_a);
  *table[NVTX_CBID_CORE_RangePop] = reinterpret_cast<NvtxFunctionPointer>(pop);
  return 1;
}
