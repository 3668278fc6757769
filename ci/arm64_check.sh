#!/usr/bin/env bash
# aarch64 check on an x86 machine: `kd2edge bench` inside a Debian bookworm arm64 root file system (what
# Raspberry Pi OS 64-bit is), run through qemu-user emulation, from a venv holding ONLY `kd2edge[device]`
# (no torch), on real int8 ONNX + int8 TFLite artifacts that the host exports from a real CIFAR-10 ResNet-20
# (resnet56 teacher logits in eval.npz). The host benches the same artifacts; top-1 and agreement with the
# PyTorch student and teacher are compared: the reference numbers (images, labels, PyTorch logits) must be
# identical; the artifacts' own top-1 and agreement may differ by at most ARM64_MAX_FLIPS images: onnxruntime's int8
# kernels round differently on x86 and Arm (1 image of 1000 changes class), and the bench's top-1 breaks exact ties of
# int8 outputs differently in x86 and Arm numpy (TFLite logits are bit-identical). See benchmarks/bench.md.
# Latency under emulation means nothing: it is never printed as a figure and the emulated bench writes its rows
# into a throw-away folder, never into benchmarks/results.
#
# Usage: bash ci/arm64_check.sh   (after setup.sh; as root, else through sudo; exits non-zero on any failure)
#   MAIN_PY             the host venv with torch + converters (default .venv/bin/python of this checkout)
#   KD2EDGE_ARM64_ROOT  the cached root file system (default ~/.cache/kd2edge/arm64-bookworm); reused while its
#                       marker file exists, rebuilt with debootstrap when missing or incomplete
#   ARM64_EVAL_IMAGES   test images in eval.npz (default 1000)
#   DEBIAN_MIRROR       debootstrap's mirror (default http://deb.debian.org/debian)
#   ARM64_QEMU_CPU      the emulated core (default cortex-a76 = Raspberry Pi 5; cortex-a72 = Pi 4)
#   ARM64_MAX_FLIPS     images on which aarch64 and x86 may disagree per metric (default 3; 0 = identical)
#   ARM64_KEEP=1        keep the work folder (artifacts, both bench JSONs, logs) and print its path
# Installs the Debian packages debootstrap, qemu-user-static and binfmt-support when missing, mounts binfmt_misc
# and enables qemu-aarch64 (a kernel-wide setting). Wall time: see benchmarks/bench.md.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
MAIN_PY=${MAIN_PY:-$REPO/.venv/bin/python}
# the host side runs THIS checkout's code (PYTHONPATH first), whatever checkout the venv was installed from
host_kd2edge() { PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$MAIN_PY" -m kd2edge "$@"; }
SHARED=${KD2EDGE_SHARED:-$REPO/../shared}
STUDENT=$SHARED/weights/cifar10/resnet20-12fca82f.th
N=${ARM64_EVAL_IMAGES:-1000}
ARM_ROOT=${KD2EDGE_ARM64_ROOT:-$HOME/.cache/kd2edge/arm64-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
QEMU_CPU_IN=${ARM64_QEMU_CPU:-cortex-a76}
MAX_FLIPS=${ARM64_MAX_FLIPS:-3}
SUITE=bookworm
PACKAGES=python3,python3-venv,python3-pip,ca-certificates
MARKER=$ARM_ROOT/.kd2edge-rootfs-complete   # written last: its absence means "missing or incomplete"
SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
start=$SECONDS
log() { echo "arm64 check [$((SECONDS - start)) s]: $*"; }
die() { echo "arm64 check FAILED: $*" >&2; exit 1; }

for f in "$STUDENT" "$REPO/data/cifar-10-batches-py/test_batch" "$MAIN_PY"; do
  [ -e "$f" ] || die "missing $f (run setup.sh; set KD2EDGE_SHARED)"
done
ARM_ROOT=$(mkdir -p "$ARM_ROOT" && cd "$ARM_ROOT" && pwd)  # absolute, no trailing slash
[ "$ARM_ROOT" != / ] || die "KD2EDGE_ARM64_ROOT must not be /"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kd2edge-arm64-check.XXXXXX")
IN=$ARM_ROOT/root/kd2edge-check            # the same folder seen from inside the root: /root/kd2edge-check

# Every mount under the root file system, deepest first (so /proc is never left mounted under a folder we delete).
unmount_all() {
  local m
  for m in $(awk -v r="$ARM_ROOT/" 'index($2, r) == 1 {print $2}' /proc/self/mounts | sort -r); do
    $SUDO umount "$m" 2>/dev/null || $SUDO umount -l "$m" || true
  done
}
cleanup() {
  [ -n "${export_pid:-}" ] && kill "$export_pid" 2>/dev/null
  unmount_all
  [ -n "${IN:-}" ] && $SUDO rm -rf --one-file-system "$IN"
  if [ "${ARM64_KEEP:-0}" = 1 ]; then echo "arm64 check: kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# ---- 1. the wheel, then the host artifacts (torch + converters) in the background while the arm64 side gets ready
# The wheel is built from a copy of the checkout's files (tracked + untracked, not ignored): no stale build/ leaks in.
mkdir -p "$WORK/src" "$WORK/wheel"
git -C "$REPO" ls-files -z -co --exclude-standard | (cd "$REPO" && xargs -0 tar cf - --no-recursion 2>/dev/null) \
  | tar xf - -C "$WORK/src"
"$MAIN_PY" -m pip wheel -q --no-deps -w "$WORK/wheel" "$WORK/src" >"$WORK/wheel.log" 2>&1 \
  || { tail -20 "$WORK/wheel.log"; die "pip wheel of the checkout failed"; }
WHEEL=$(ls "$WORK"/wheel/kd2edge-*.whl)
KD2EDGE_DATA="$REPO/data" PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$MAIN_PY" -m kd2edge export "$STUDENT" \
  --arch resnet20 --teacher cifar10-resnet56 -t onnx -t tflite --precision int8 --eval-images "$N" --out "$WORK/exports" --json >"$WORK/export.json" 2>"$WORK/export.log" &
export_pid=$!  # the python process itself: cleanup stops it if this script fails first

# ---- 2. Debian packages, binfmt_misc + qemu-aarch64 -----------------------------------------------------------
missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
[ -x /usr/bin/qemu-aarch64-static ] || missing+=(qemu-user-static)
command -v update-binfmts >/dev/null || missing+=(binfmt-support)
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      "${missing[@]}"; } >"$WORK/apt.log" 2>&1 || { tail -20 "$WORK/apt.log"; die "apt-get install failed"; }
fi
BINFMT=/proc/sys/fs/binfmt_misc
[ -e "$BINFMT/status" ] || $SUDO mount -t binfmt_misc binfmt_misc "$BINFMT" \
  || die "cannot mount binfmt_misc (a container needs the host's binfmt_misc or --privileged)"
[ -e "$BINFMT/qemu-aarch64" ] || $SUDO update-binfmts --import qemu-aarch64 >/dev/null 2>&1 || true
$SUDO update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
grep -qx enabled "$BINFMT/qemu-aarch64" 2>/dev/null || die "qemu-aarch64 is not enabled in $BINFMT"
log "qemu-aarch64 enabled ($(/usr/bin/qemu-aarch64-static --version | head -1))"

# ---- 3. the cached root file system ---------------------------------------------------------------------------
exec 9>"$ARM_ROOT.lock"
flock 9  # one run at a time per root file system
unmount_all  # left over by a killed run
if [ -e "$MARKER" ]; then
  log "reusing $ARM_ROOT ($(cat "$MARKER"))"
else
  log "building $ARM_ROOT with debootstrap (arm64 $SUITE: $PACKAGES)"
  unmount_all
  $SUDO rm -rf --one-file-system "$ARM_ROOT"
  $SUDO mkdir -p "$ARM_ROOT"
  $SUDO debootstrap --arch=arm64 --variant=minbase --include="$PACKAGES" "$SUITE" "$ARM_ROOT" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1 || { tail -30 "$WORK/debootstrap.log"; die "debootstrap failed"; }
  $SUDO chroot "$ARM_ROOT" /usr/bin/python3 -c 'import venv, ensurepip' || die "python3-venv missing in the root"
  $SUDO rm -rf "$ARM_ROOT"/var/cache/apt/archives/*.deb
  echo "debootstrap --arch=arm64 --variant=minbase --include=$PACKAGES $SUITE $MIRROR, $(date -u +%FT%TZ)" \
    | $SUDO tee "$MARKER.tmp" >/dev/null
  $SUDO mv "$MARKER.tmp" "$MARKER"
  log "root file system ready"
fi
# qemu-user shows the host's x86 /proc/cpuinfo and /sys: onnxruntime's cpuinfo then segfaults (with /sys) or
# warns (older onnxruntime aborts) without it. So the root sees what the emulated board shows: a /proc/cpuinfo of
# four cores of QEMU_CPU (features = that core's, as on a Raspberry Pi) and /sys/devices/system/cpu/{possible,...}.
$SUDO mount -t proc proc "$ARM_ROOT/proc"
case $QEMU_CPU_IN in  # "variant part revision features" of the Pi 5 / Pi 4 cores
  cortex-a76) core="0x4 0xd0b 1 fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp" ;;
  cortex-a72) core="0x0 0xd08 3 fp asimd evtstrm crc32 cpuid" ;;
  *) die "ARM64_QEMU_CPU=$QEMU_CPU_IN: use cortex-a76 (Pi 5) or cortex-a72 (Pi 4)" ;;
esac
read -r variant part rev features <<<"$core"
for i in 0 1 2 3; do
  printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' \
    "$i" "$features" "$variant" "$part" "$rev"
done >"$WORK/cpuinfo"
mkdir -p "$WORK/sys/devices/system/cpu"
for f in possible present online; do echo 0-3 >"$WORK/sys/devices/system/cpu/$f"; done
$SUDO mount --bind "$WORK/cpuinfo" "$ARM_ROOT/proc/cpuinfo"
$SUDO mount --bind -o ro "$WORK/sys" "$ARM_ROOT/sys"
[ -c "$ARM_ROOT/dev/null" ] && [ -c "$ARM_ROOT/dev/urandom" ] || $SUDO mount --bind /dev "$ARM_ROOT/dev"

# pip inside must reach the same registry: DNS, the pip configuration files, PIP_* and proxy variables, the files
# they name (CA bundle, constraints) copied to the same path, local index / find-links folders bind-mounted read-only.
$SUDO cp -L /etc/resolv.conf "$ARM_ROOT/etc/resolv.conf"
copy_in() {  # copy_in HOST_PATH [PATH_INSIDE]
  local dst=$ARM_ROOT${2:-$1}
  $SUDO mkdir -p "$(dirname "$dst")" && $SUDO cp -rL "$1" "$dst"
}
for f in /etc/pip.conf /etc/xdg/pip; do [ -e "$f" ] && copy_in "$f"; done
for f in "$HOME/.config/pip" "$HOME/.pip"; do [ -e "$f" ] && copy_in "$f" "/root/${f#"$HOME"/}"; done
[ -n "${PIP_CONFIG_FILE:-}" ] && [ -e "$PIP_CONFIG_FILE" ] && copy_in "$PIP_CONFIG_FILE"
for p in $("$MAIN_PY" -m pip config list 2>/dev/null | sed -n "s/^[^=]*=\(.*\)$/\1/p" | tr -d "'\"" | tr ' ' '\n' \
           | sed 's#^file://##' | grep '^/' | sort -u); do
  if [ -f "$p" ]; then copy_in "$p"; continue; fi
  p=${p%/}; [ "${p##*/}" = simple ] && p=${p%/simple}  # a local index: its pages link to ../../files
  if [ -d "$p" ] && [ -n "$p" ] && ! mountpoint -q "$ARM_ROOT$p"; then
    $SUDO mkdir -p "$ARM_ROOT$p" && $SUDO mount --bind -o ro "$p" "$ARM_ROOT$p" && $SUDO mount -o remount,bind,ro "$ARM_ROOT$p"
  fi
done
for v in SSL_CERT_FILE REQUESTS_CA_BUNDLE; do [ -n "${!v:-}" ] && [ -f "${!v}" ] && copy_in "${!v}"; done
ENV_IN=(HOME=/root LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin QEMU_CPU="$QEMU_CPU_IN")
while IFS= read -r v; do ENV_IN+=("$v"); done < <(env | grep -E '^(PIP_[A-Z_]+|SSL_CERT_FILE|REQUESTS_CA_BUNDLE|(https?|no|all)_proxy|(HTTPS?|NO|ALL)_PROXY)=' || true)
in_root() { $SUDO chroot "$ARM_ROOT" /usr/bin/env -i "${ENV_IN[@]}" "$@"; }
[ "$(in_root uname -m)" = aarch64 ] || die "the root does not run as aarch64"
log "chroot runs aarch64 (emulated core: $QEMU_CPU_IN)"

# ---- 4. inside the arm64 root: a venv with only kd2edge[device] (while the host exports), torch absent -------------
$SUDO rm -rf --one-file-system "$IN" && $SUDO mkdir -p "$IN/exports"
$SUDO cp "$WHEEL" "$IN/"
log "arm64: python3 -m venv + pip install $(basename "$WHEEL")[device] (emulated, slow)"
in_root /bin/bash -euo pipefail -c '
cd /root/kd2edge-check
python3 -m venv venv
venv/bin/pip install -q --disable-pip-version-check "$(ls kd2edge-*.whl)[device]" >pip.log 2>&1
venv/bin/pip list --format=freeze >freeze.txt
if venv/bin/python -c "import torch" 2>/dev/null; then echo "torch imports in the device venv" >&2; exit 1; fi
venv/bin/python - <<EOF >versions.txt
import importlib.metadata as m, importlib.util, platform, sys
assert not any(importlib.util.find_spec(x) for x in ("torch", "torchvision", "litert_torch")), "torch-side package present"
pk = ("numpy", "onnxruntime", "ai-edge-litert")
print(platform.machine(), "Python", platform.python_version(), "glibc", platform.libc_ver()[1], *(f"{p} {m.version(p)}" for p in pk))
EOF
' || { tail -20 "$IN/pip.log" 2>/dev/null; die "device venv inside the arm64 root failed"; }
log "arm64 venv: $(cat "$IN/versions.txt"); torch absent"

# ---- 5. the host artifacts, benched on the host and inside the root ----------------------------------------------
wait "$export_pid" || { export_pid=; tail -30 "$WORK/export.log"; die "host export failed"; }
export_pid=
ONNX=$(ls -d "$WORK"/exports/*-onnx-int8) && TFL=$(ls -d "$WORK"/exports/*-tflite-int8) || die "no int8 artifacts"
log "host exported $(basename "$ONNX") + $(basename "$TFL") ($N images)"
BENCH_ARGS=(--threads 1 --runs 20 --warmup 2 --json)
(cd "$WORK" && host_kd2edge bench exports/"$(basename "$ONNX")" exports/"$(basename "$TFL")" "${BENCH_ARGS[@]}" \
   --out "$WORK/host-results" >"$WORK/bench-host.json" 2>"$WORK/bench-host.log") \
  || { tail -20 "$WORK/bench-host.log"; die "host bench failed"; }
"$MAIN_PY" -c 'import importlib.metadata as m; print(" ".join(f"{p} {m.version(p)}" for p in ("numpy", "onnxruntime", "ai-edge-litert")))' \
  >"$WORK/host-versions.txt"
$SUDO cp -r "$ONNX" "$TFL" "$IN/exports/"
in_root /bin/bash -euo pipefail -c "cd /root/kd2edge-check && venv/bin/kd2edge bench exports/$(basename "$ONNX") \
  exports/$(basename "$TFL") ${BENCH_ARGS[*]} --out /root/kd2edge-check/results >bench-arm64.json 2>bench-arm64.log" \
  || { tail -20 "$IN/bench-arm64.log"; die "kd2edge bench failed inside the arm64 root"; }
cp "$IN/bench-arm64.json" "$IN/bench-arm64.log" "$IN/versions.txt" "$IN/freeze.txt" "$IN/pip.log" "$WORK/"
log "arm64 bench done (emulated: latency not meaningful)"

# ---- 6. the same numbers on both --------------------------------------------------------------------------------
"$MAIN_PY" - "$WORK" "$((SECONDS - start))" "$MAX_FLIPS" "$QEMU_CPU_IN" <<'EOF'
import json, sys
from pathlib import Path
work, elapsed, max_flips, core = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
host = json.loads((work / "bench-host.json").read_text())
arm = json.loads((work / "bench-arm64.json").read_text())
SAME = ("n_eval", "student_top1", "teacher_top1")  # the references: same images, same PyTorch logits
CLOSE = ("top1", "agree_student", "agree_teacher")  # the artifact's own predictions: int8 kernels differ by ISA
assert [r["artifact"] for r in host] == [r["artifact"] for r in arm] and len(host) == 2, (host, arm)
bad, parts, flips_seen = [], [], 0
for h, a in zip(host, arm):
    assert h["status"] == a["status"] == "ok", (h, a)
    assert a["arch"] == "aarch64" and h["arch"] == "x86_64", (a["arch"], h["arch"])
    n = h["n_eval"]
    for k in SAME:
        if h.get(k) is None or h.get(k) != a.get(k):
            bad.append(f"{h['artifact']} {k}: x86_64 {h.get(k)} vs aarch64 {a.get(k)} (must be identical)")
    diffs = []
    for k in CLOSE:
        flips = round(abs(h[k] - a[k]) * n / 100)
        flips_seen = max(flips_seen, flips)
        if flips:
            diffs.append(f"{k} {a[k] - h[k]:+.1f} pt")
        if flips > max_flips:
            bad.append(f"{h['artifact']} {k}: x86_64 {h[k]:.2f} vs aarch64 {a[k]:.2f} = {flips} images > {max_flips}")
    for who, r, tail in (("x86_64", h, ""), ("aarch64", a, "  (emulated: latency not meaningful)")):
        print(f"  {r['artifact']:<30} {who:<8} {r['runtime']} {r['runtime_version']:<7} top-1 {r['top1']:.2f}  "
              f"agree student {r['agree_student']:.2f}  agree teacher {r['agree_teacher']:.2f}{tail}")
    parts.append(f"{h['target']} int8 top-1 / agree student / agree teacher: x86_64 {h['top1']:.1f}/"
                 f"{h['agree_student']:.1f}/{h['agree_teacher']:.1f}, aarch64 {a['top1']:.1f}/{a['agree_student']:.1f}/"
                 f"{a['agree_teacher']:.1f}" + (f" ({', '.join(diffs)})" if diffs else " (identical)"))
if bad:
    sys.exit("arm64 check FAILED: aarch64 and x86_64 differ:\n  " + "\n  ".join(bad))
v = (work / "versions.txt").read_text().split()
hv = (work / "host-versions.txt").read_text().strip()
verdict = "identical" if flips_seen == 0 else f"within {flips_seen} of {n} images (int8 rounding / ties differ by ISA)"
print(f"arm64 check OK in {elapsed} s, {verdict}: aarch64 ({core} under qemu, Debian bookworm, Python {v[2]}, "
      f"{' '.join(v[5:])}) vs x86_64 ({hv}), {n} images, references identical; {'; '.join(parts)}; "
      "emulated: latency not meaningful")
EOF
