#!/bin/sh
# Compile NetTrust's eBPF programs (nettrust_core/firewall/bpf/*.bpf.c -> *.bpf.o, package data).
# Needs Debian's clang, llvm (llvm-strip) and libbpf-dev; the objects are bytecode for every
# architecture (little-endian), so install.sh ships them and a host needs no compiler.
# `llvm-strip -g` drops DWARF but keeps BTF (libbpf needs it for the maps): the output is the same
# byte for byte whichever directory it was built in.
set -eu
cd "$(dirname "$0")"
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
build() {  # build SOURCE OBJECT [CFLAGS...]
    src=$1 obj=$2; shift 2
    clang -O2 -g -Wall -Werror -target bpfel -I"/usr/include/$multiarch" "$@" -c "$src" -o "$obj.tmp"
    llvm-strip -g "$obj.tmp"
    mv "$obj.tmp" "$obj"
}
build nettrust.bpf.c nettrust.bpf.o
# Without the conntrack kfunc (kernels before 5.18): the loader falls back to it.
build nettrust.bpf.c nettrust-noct.bpf.o -DNO_CONNTRACK
