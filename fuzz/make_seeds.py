#!/usr/bin/env python3
"""Writes the seed inputs of fuzz/corpus_readers_fuzz.cpp into fuzz/seeds/ (committed; rerun
after changing the input layout). Each seed is a valid corpus in the fuzz target's input layout:
byte 0 selects the reader (bit 0: 0 Megatron, 1 llm.c; bit 1: Megatron without its .bin); a
Megatron input continues with the .idx length (<H), the .idx, then the .bin; an llm.c input
continues with the shard file."""
import os
import struct

SEEDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def megatron_idx(code, sizes, item, doc_idx):
    """An .idx as Megatron-LM's _IndexWriter writes it."""
    pointers, offset = [], 0
    for s in sizes:
        pointers.append(offset)
        offset += s * item
    out = b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, code, len(sizes), len(doc_idx))
    out += struct.pack("<%di" % len(sizes), *sizes)
    out += struct.pack("<%dq" % len(pointers), *pointers)
    out += struct.pack("<%dq" % len(doc_idx), *doc_idx)
    return out


def megatron_input(idx, bin_, selector=0):
    return bytes([selector]) + struct.pack("<H", len(idx)) + idx + bin_


def llmc_input(tokens):
    header = [0] * 256
    header[0:3] = [20240520, 1, len(tokens)]
    return b"\x01" + struct.pack("<256i", *header) + struct.pack("<%dH" % len(tokens), *tokens)


def main():
    os.makedirs(SEEDS, exist_ok=True)
    seeds = {
        # Two documents of one sequence each, uint16 (what `tessera tokenize encode` writes).
        "megatron_u16": megatron_input(
            megatron_idx(8, [3, 2], 2, [0, 1, 2]), struct.pack("<5H", 1, 2, 3, 4, 5)),
        # int32 tokens; three sequences (one empty) in two documents, as Megatron may write.
        "megatron_i32_multi_sequence_documents": megatron_input(
            megatron_idx(4, [2, 0, 3], 4, [0, 2, 3]),
            struct.pack("<5i", 70000, 1, 65535, 2, 3)),
        # A valid index whose .bin is missing.
        "megatron_missing_bin": megatron_input(
            megatron_idx(8, [1], 2, [0, 1]), b"", selector=2),
        "llmc_gpt2": llmc_input([50256, 15496, 11, 995, 0, 50256]),
        "llmc_one_token": llmc_input([7]),
    }
    for name, data in seeds.items():
        with open(os.path.join(SEEDS, name), "wb") as f:
            f.write(data)
    print("wrote %d seeds to %s" % (len(seeds), SEEDS))


if __name__ == "__main__":
    main()
