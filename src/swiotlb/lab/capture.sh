#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
#
# capture.sh - record a SWIOTLB trace on a real Linux machine for the swiotlb lab.
#
# Writes OUTDIR/NAME.trace.txt.gz (gzip of the raw text of tracefs "trace") and
# OUTDIR/NAME.meta.json in the layout of the lab's reference captures, ready for
#   swiotlb replay NAME.trace.txt.gz --meta NAME.meta.json
#   swiotlb advise NAME.trace.txt.gz --meta NAME.meta.json
# POSIX sh (busybox ash, dash, bash). Run as root. See docs/capturing.md.
#
# Roots can be overridden (used by the lab's tests, or for unusual mounts):
#   SWIOTLB_TRACEFS    tracefs directory     (default /sys/kernel/tracing,
#                                             then /sys/kernel/debug/tracing)
#   SWIOTLB_DEBUGFS    debugfs directory     (default /sys/kernel/debug)
#   SWIOTLB_PROC       procfs directory      (default /proc)
#   SWIOTLB_SYSFS      sysfs directory       (default /sys)
#   SWIOTLB_DMESG_CMD  command printing the kernel log (default "dmesg")
#   SWIOTLB_PYTHON     python3 used to write the JSON ("none": use the sh writer)

CAPTURE_VERSION=1
LC_ALL=C
export LC_ALL

usage() {
	cat <<'EOF'
usage: capture.sh [options] -- WORKLOAD-CMD [ARG...]
       capture.sh [options] -w NAME=CMD [-w NAME=CMD...] [-- WORKLOAD-CMD...]

Records swiotlb:swiotlb_bounced and every dma:* trace event while the workloads
run, each bracketed by "MARK begin NAME"/"MARK end NAME" trace markers and by
reads of /sys/kernel/debug/swiotlb (io_tlb_used_hiwater is reset to 0 before
each workload). Writes OUTDIR/NAME.trace.txt.gz and OUTDIR/NAME.meta.json.

options:
  -o OUTDIR     output directory (default: .)
  -n NAME       capture name (default: capture); also the name of the
                workload given after "--"
  -b KB         ring-buffer size per CPU in KiB (buffer_size_kb); default:
                min(204800, MemAvailable/4/CPUs), at least 8192. One event
                takes about 80-120 bytes, so KB*10 is roughly the number of
                events one CPU's buffer holds before it drops events.
  -w NAME=CMD   add a workload (run with sh -c CMD); repeatable, run in order
  -c CPULIST    run the workloads under "taskset -c CPULIST"
  -d TEXT       free-text description stored in the meta
  -f            overwrite existing output files
  -k            keep the working directory (raw files) next to the outputs
  -R            do not restore the previous tracing settings at the end
  -h            this help
EOF
}

say() { printf 'capture: %s\n' "$*" >&2; }
die() { printf 'capture: error: %s\n' "$*" >&2; exit 1; }
warn() {
	printf 'capture: WARNING: %s\n' "$*" >&2
	[ -n "${W:-}" ] && [ -d "$W" ] && printf '%s\n' "$*" >> "$W/warnings"
	return 0
}
# wr VALUE FILE: write VALUE to a control file, warn on failure
wr() {
	if ! printf '%s\n' "$1" > "$2" 2>/dev/null; then
		warn "could not write '$1' to $2"
		return 1
	fi
	return 0
}
# rd FILE: first line of FILE, or nothing
rd() { [ -r "$1" ] && head -n 1 "$1" 2>/dev/null; return 0; }
have() { command -v "$1" >/dev/null 2>&1; }
# is_uint VALUE
is_uint() { case "$1" in ''|*[!0-9]*) return 1 ;; *) return 0 ;; esac; }
# valid_name NAME: capture and workload names go into file names and markers
valid_name() { case "$1" in ''|*[!A-Za-z0-9._+-]*) return 1 ;; *) return 0 ;; esac; }

OUTDIR=.
NAME=capture
BUFKB=
CPULIST=
DESCRIPTION=
FORCE=0
KEEP=0
RESTORE=1
NW=0

# workloads given with -w are kept in a temporary list until W exists
WLIST=$(mktemp "${TMPDIR:-/tmp}/swiotlb-capture-wl.XXXXXX") || die "mktemp failed"
trap 'rm -f "$WLIST"' EXIT

while getopts o:n:b:w:c:d:fkRh opt; do
	case $opt in
	o) OUTDIR=$OPTARG ;;
	n) NAME=$OPTARG ;;
	b) BUFKB=$OPTARG ;;
	w)
		case $OPTARG in
		*=*) valid_name "${OPTARG%%=*}" || die "bad workload name in -w '$OPTARG'" ;;
		*) die "-w wants NAME=CMD, got '$OPTARG'" ;;
		esac
		NW=$((NW + 1))
		printf '%s\n' "$OPTARG" >> "$WLIST"
		;;
	c) CPULIST=$OPTARG ;;
	d) DESCRIPTION=$OPTARG ;;
	f) FORCE=1 ;;
	k) KEEP=1 ;;
	R) RESTORE=0 ;;
	h) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ "${1:-}" = "--" ] && shift
if [ $# -eq 0 ] && [ "$NW" -eq 0 ]; then
	usage >&2
	die "no workload: give -w NAME=CMD or -- CMD..."
fi
valid_name "$NAME" || die "NAME must be non-empty and use only A-Z a-z 0-9 . _ + -"
if [ -n "$BUFKB" ] && ! is_uint "$BUFKB"; then die "-b wants a number of KiB"; fi

PROC=${SWIOTLB_PROC:-/proc}
SYSFS=${SWIOTLB_SYSFS:-/sys}
DEBUGFS=${SWIOTLB_DEBUGFS:-/sys/kernel/debug}
DMESG_CMD=${SWIOTLB_DMESG_CMD:-dmesg}

mkdir -p "$OUTDIR" || die "cannot create $OUTDIR"
TRACE_OUT=$OUTDIR/$NAME.trace.txt.gz
META_OUT=$OUTDIR/$NAME.meta.json
if [ "$FORCE" -ne 1 ]; then
	for f in "$TRACE_OUT" "$META_OUT"; do
		[ -e "$f" ] && die "$f exists (use -f to overwrite)"
	done
fi
W=$OUTDIR/.$NAME.capture
rm -rf "$W"
mkdir -p "$W/wl" "$W/fmt" "$W/cpu" || die "cannot create $W"
: > "$W/warnings"
cp "$WLIST" "$W/wlist"
rm -f "$WLIST"
trap - EXIT
if [ $# -gt 0 ]; then
	NW=$((NW + 1))
	printf '%s=%s\n' "$NAME" "$*" >> "$W/wlist"
	MAIN_ARGS=1
else
	MAIN_ARGS=0
fi

if [ "$(id -u 2>/dev/null)" != 0 ] && [ -z "${SWIOTLB_TRACEFS:-}" ]; then
	warn "not running as root: tracefs and debugfs writes will probably fail"
fi

# ---------------------------------------------------------------- tracefs
mounted() { grep -q " $1 " "$PROC/mounts" 2>/dev/null; }
if [ -n "${SWIOTLB_TRACEFS:-}" ]; then
	T=$SWIOTLB_TRACEFS
	[ -e "$T/trace" ] || die "SWIOTLB_TRACEFS=$T has no 'trace' file"
else
	T=/sys/kernel/tracing
	if [ ! -e "$T/trace" ]; then
		say "mounting tracefs on $T"
		mount -t tracefs nodev "$T" 2>/dev/null
	fi
	if [ ! -e "$T/trace" ]; then
		mounted "$DEBUGFS" || mount -t debugfs nodev "$DEBUGFS" 2>/dev/null
		[ -e "$DEBUGFS/tracing/trace" ] && T=$DEBUGFS/tracing
	fi
	[ -e "$T/trace" ] || die "no tracefs (need CONFIG_FTRACE/CONFIG_EVENT_TRACING; try: mount -t tracefs nodev /sys/kernel/tracing)"
fi

# ---------------------------------------------------------------- debugfs
S=$DEBUGFS/swiotlb
if [ ! -d "$S" ] && [ -z "${SWIOTLB_DEBUGFS:-}" ] && ! mounted "$DEBUGFS"; then
	say "mounting debugfs on $DEBUGFS"
	mount -t debugfs nodev "$DEBUGFS" 2>/dev/null
fi
if [ -d "$S" ]; then
	for f in "$S"/*; do [ -f "$f" ] && basename "$f"; done > "$W/debugfs_files"
	[ -e "$S/io_tlb_used_hiwater" ] || warn "$S has no io_tlb_used_hiwater (older kernel): no per-workload high-water marks"
	[ -e "$S/io_tlb_transient_nslabs" ] && warn "CONFIG_SWIOTLB_DYNAMIC: transient/extra pools are not described by this capture's pool range"
else
	: > "$W/debugfs_files"
	warn "no $S (CONFIG_DEBUG_FS off, debugfs not mounted, or swiotlb not initialised): no debugfs counters"
fi

# dbg FILE: the counter, or empty
dbg() { v=$(rd "$S/$1"); is_uint "$v" && printf '%s' "$v"; return 0; }
# snap OUTFILE: "nslabs used hiwater" (empty fields as '-')
snap() {
	a=$(dbg io_tlb_nslabs); b=$(dbg io_tlb_used); c=$(dbg io_tlb_used_hiwater)
	printf '%s %s %s\n' "${a:--}" "${b:--}" "${c:--}" > "$1"
}

# ---------------------------------------------------------------- system facts
uname -a > "$W/uname_a" 2>/dev/null || : > "$W/uname_a"
if [ -r "$PROC/sys/kernel/osrelease" ]; then
	rd "$PROC/sys/kernel/osrelease" > "$W/release"
else
	uname -r > "$W/release"
fi
rd "$PROC/cmdline" > "$W/cmdline"
grep -c '^processor' "$PROC/cpuinfo" > "$W/vcpus" 2>/dev/null || : > "$W/vcpus"
if [ "$(cat "$W/vcpus")" = 0 ] || [ ! -s "$W/vcpus" ]; then
	(nproc --all 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null) > "$W/vcpus"
fi
(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || cat "$W/vcpus") > "$W/nproc"
grep '^MemTotal:' "$PROC/meminfo" > "$W/memtotal" 2>/dev/null || : > "$W/memtotal"
MEMKB=$(awk '{print $2}' "$W/memtotal")
AVAILKB=$(awk '/^MemAvailable:/ {print $2}' "$PROC/meminfo" 2>/dev/null)
# RAM: online memory blocks if sysfs has them (closer to installed RAM), else MemTotal
RAM_MB=
MB=$SYSFS/devices/system/memory
if [ -r "$MB/block_size_bytes" ]; then
	bs=$(rd "$MB/block_size_bytes")
	n=0
	for st in "$MB"/memory*/state; do
		[ -r "$st" ] && [ "$(rd "$st")" = online ] && n=$((n + 1))
	done
	if [ "$n" -gt 0 ]; then
		RAM_MB=$(( n * 0x$bs / 1048576 ))
		echo "online memory blocks ($n x 0x$bs bytes)" > "$W/ram_mb_source"
	fi
fi
if [ -z "$RAM_MB" ] && is_uint "$MEMKB"; then
	RAM_MB=$((MEMKB / 1024))
	echo "MemTotal / 1024 (less than installed RAM)" > "$W/ram_mb_source"
fi
echo "${RAM_MB:-}" > "$W/ram_mb"
if [ -r /etc/os-release ]; then
	sed -n 's/^PRETTY_NAME=//p' /etc/os-release | tr -d '"' | head -n 1 > "$W/os"
else
	: > "$W/os"
fi
# selected kernel config options
CFG=
if [ -r "$PROC/config.gz" ]; then CFG="gzip -dc $PROC/config.gz"
elif [ -r "/boot/config-$(cat "$W/release")" ]; then CFG="cat /boot/config-$(cat "$W/release")"
fi
: > "$W/config"
if [ -n "$CFG" ]; then
	$CFG 2>/dev/null | awk '
	BEGIN { n = split("CONFIG_PREEMPT_DYNAMIC CONFIG_HZ CONFIG_IOMMU_DMA CONFIG_SWIOTLB CONFIG_SWIOTLB_DYNAMIC CONFIG_DMA_NEED_SYNC CONFIG_DMA_API_DEBUG CONFIG_DEBUG_FS CONFIG_EVENT_TRACING CONFIG_FTRACE CONFIG_AMD_MEM_ENCRYPT CONFIG_INTEL_TDX_GUEST CONFIG_ARM64_CCA", k, " ")
	        for (i = 1; i <= n; i++) want[k[i]] = 1 }
	/^CONFIG_/ { split($0, kv, "="); if (kv[1] in want) { v = substr($0, length(kv[1]) + 2); gsub(/"/, "", v); print kv[1] "\t" v } }
	/^# CONFIG_.* is not set$/ { if ($2 in want) print $2 "\tnot set" }' > "$W/config"
fi

# ---------------------------------------------------------------- dmesg
sh -c "$DMESG_CMD" > "$W/dmesg_full" 2>/dev/null || warn "'$DMESG_CMD' failed (need root, or kernel.dmesg_restrict=0)"
grep -i -E 'swiotlb|software IO TLB|buffer is full|callbacks suppressed' "$W/dmesg_full" > "$W/dmesg_swiotlb" 2>/dev/null
# memblock=debug: each memblock line naming swiotlb plus the memblock_reserve that follows it
awk '
	/memblock_/ && tolower($0) ~ /swiotlb/ { print; want = 1; next }
	want && /memblock_reserve/ { print; want = 0; next }
	/memblock_/ && !/memblock_reserve/ { want = 0 }' "$W/dmesg_full" > "$W/memblock" 2>/dev/null
head -n 1 "$W/dmesg_full" | grep -q '\[ *0\.000000\]' || \
	warn "the kernel log no longer starts at boot (wrapped?): boot lines may be missing; boot with log_buf_len=16M"
grep -q 'buffer is full' "$W/dmesg_swiotlb" && warn "dmesg already has 'swiotlb buffer is full' lines from before this capture"
grep -c 'buffer is full' "$W/dmesg_swiotlb" > "$W/buffer_full_before" 2>/dev/null

# ---------------------------------------------------------------- the pool
# io_tlb_nslabs from debugfs (default pool), area count from dmesg
NSLABS=$(dbg io_tlb_nslabs)
[ -n "$NSLABS" ] && [ "$NSLABS" -eq 0 ] && warn "io_tlb_nslabs is 0: swiotlb has no pool on this machine"
AREAS=$(sed -n 's/.*software IO TLB: area num \([0-9][0-9]*\).*/\1/p' "$W/dmesg_swiotlb" | tail -n 1)
if [ -n "$AREAS" ]; then
	AREA_NOTE="from dmesg 'software IO TLB: area num N.'"
	# the kernel lowers the area count when the pool has fewer than 128 slots per area
	if [ -n "$NSLABS" ] && [ "$NSLABS" -gt 0 ] && [ $((NSLABS / 128)) -lt "$AREAS" ]; then
		AREAS=$((NSLABS / 128))
		AREA_NOTE="dmesg area num limited to io_tlb_nslabs/128"
	fi
else
	AREAS=1
	AREA_NOTE="no 'area num' line in dmesg (kernel before 6.0, or boot log lost): assumed 1"
	warn "$AREA_NOTE"
fi
PSTART=; PEND=; PNOTE=
m=$(sed -n 's/.*software IO TLB: mapped \[mem \(0x[0-9a-fA-F]*\)-\(0x[0-9a-fA-F]*\)\].*/\1 \2/p' "$W/dmesg_swiotlb" | head -n 1)
if [ -n "$m" ]; then
	a=$((${m%% *})); b=$((${m#* }))
	if [ -n "$NSLABS" ] && [ $((b - a + 1)) -eq $((NSLABS * 2048)) ]; then
		PEND=$b
	else
		PEND=$((b - 1)) # the kernel prints start and start + size
	fi
	PSTART=$a
	PNOTE="pool range from dmesg 'software IO TLB: mapped [mem START-END]' (END exclusive); slot index = (dma_addr - start) >> 11"
else
	m=$(awk '
		/memblock_alloc/ && tolower($0) ~ /swiotlb/ && !seen {
			seen = 1; for (i = 1; i <= NF; i++) if ($(i + 1) == "bytes") bytes = $i; next }
		seen && /memblock_reserve: \[/ {
			s = $0; sub(/.*memblock_reserve: \[/, "", s); sub(/\].*/, "", s); sub(/-/, " ", s)
			print s, bytes; exit }' "$W/memblock")
	if [ -n "$m" ]; then
		m1=${m%% *}; m3=${m##* }; m2=${m#* }; m2=${m2%% *}
		PSTART=$((m1)); PEND=$((m2))
		PNOTE="pool range taken from the memblock_reserve line following the first swiotlb allocation (memblock=debug); slot index = (dma_addr - start) >> 11"
		if is_uint "$m3" && [ $((PEND - PSTART + 1)) -ne "$m3" ]; then
			warn "memblock_reserve range ($m1-$m2) does not match the allocation size $m3: check swiotlb.memblock_debug_lines"
		fi
	fi
fi
if [ -n "$PSTART" ]; then
	PBYTES=$((PEND - PSTART + 1))
	if [ -n "$NSLABS" ] && [ "$PBYTES" -ne $((NSLABS * 2048)) ]; then
		warn "pool range is $PBYTES bytes but io_tlb_nslabs*2048 is $((NSLABS * 2048))"
	fi
	[ -z "$NSLABS" ] && NSLABS=$((PBYTES / 2048))
	PSTART=$(printf '0x%x' "$PSTART")
	PEND=$(printf '0x%x' "$PEND")
else
	PBYTES=
	PNOTE="pool range unknown: dmesg has no 'software IO TLB: mapped [mem ...]' line and no memblock=debug lines; reboot with 'memblock=debug log_buf_len=16M' on the kernel command line and capture again"
	warn "cannot find the bounce pool's physical range; reboot with memblock=debug log_buf_len=16M (see docs/capturing.md)"
fi
if ! grep -q -i 'software IO TLB\|swiotlb' "$W/dmesg_swiotlb" 2>/dev/null && [ ! -d "$S" ]; then
	warn "no sign of swiotlb in dmesg or debugfs: swiotlb is probably not active"
fi
case " $(cat "$W/cmdline") " in
*" swiotlb=noforce "*) warn "swiotlb=noforce on the command line: swiotlb is disabled" ;;
*" swiotlb="*force*) ;;
*) say "note: no swiotlb=force on the command line; only mappings that need bouncing (address limits, encrypted guests) will bounce" ;;
esac
{
	echo "$PSTART"; echo "$PEND"; echo "$PBYTES"; echo "$NSLABS"; echo "$AREAS"
} > "$W/pool"
echo "$PNOTE" > "$W/pool_note"
echo "$AREA_NOTE" > "$W/area_note"

# ---------------------------------------------------------------- devices
# virtio devices: feature bit 33 (VIRTIO_F_ACCESS_PLATFORM) decides whether the
# device goes through the DMA API at all. Without it virtio hands guest-physical
# addresses to the device directly: no dma_* events and no bouncing.
first_entry() { for x in "$1"/*; do [ -e "$x" ] && basename "$x"; break; done; return 0; }
pci_of() { printf '%s\n' "$1" | tr '/' '\n' | grep -E '^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$' | tail -n 1; }
: > "$W/virtio"
if [ -d "$SYSFS/bus/virtio/devices" ]; then
	for d in "$SYSFS"/bus/virtio/devices/*; do
		[ -e "$d/features" ] || continue
		feat=$(rd "$d/features")
		bit33=$(printf '%s' "$feat" | cut -c34)
		bit32=$(printf '%s' "$feat" | cut -c33)
		real=$(cd "$d" 2>/dev/null && pwd -P)
		pci=$(pci_of "$real")
		drv=$(basename "$(readlink "$d/driver" 2>/dev/null)" 2>/dev/null)
		devid=$(rd "$d/device")
		blk=$(first_entry "$d/block")
		net=$(first_entry "$d/net")
		ap=false
		[ "$bit33" = 1 ] && ap=true
		printf '%s|%s|%s|%s|%s|%s|%s|%s|%s\n' "$(basename "$d")" "$pci" "$drv" "$devid" "$feat" "$ap" "$bit32" "$blk" "$net" >> "$W/virtio"
		if [ "$ap" = false ]; then
			warn "virtio device $(basename "$d") (${pci:-no PCI}${blk:+, $blk}${net:+, $net}) lacks VIRTIO_F_ACCESS_PLATFORM (feature bit 33): it bypasses the DMA API and will not appear in the trace (QEMU: add iommu_platform=on,disable-legacy=on to its -device, e.g. -device virtio-blk-pci,iommu_platform=on,disable-legacy=on)"
		fi
	done
fi
# block and network devices backed by a PCI function, with their queue limits
# (raw files use '|' between fields: tab is IFS white space, so empty fields would collapse)
: > "$W/devices"
for d in "$SYSFS"/block/* "$SYSFS"/class/net/*; do
		case $d in */class/net/*) kind=net ;; *) kind=block ;; esac
		[ -e "$d/device" ] || continue
		real=$(cd "$d" 2>/dev/null && pwd -P)
		pci=$(pci_of "$real")
		[ -n "$pci" ] || continue
		drv=$(basename "$(readlink "$SYSFS/bus/pci/devices/$pci/driver" 2>/dev/null)" 2>/dev/null)
		q=$d/queue
		uses=true
		vname=$(printf '%s\n' "$real" | tr '/' '\n' | grep '^virtio[0-9]' | tail -n 1)
		if [ -n "$vname" ]; then
			ap=$(awk -F '|' -v v="$vname" '$1 == v { print $6 }' "$W/virtio")
			[ "$ap" = true ] || uses=false
		fi
		printf '%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s\n' "$kind" "$(basename "$d")" "$pci" "${drv:-}" "$uses" "$real" \
			"$(rd "$d/size")" "$(rd "$q/logical_block_size")" "$(rd "$q/max_sectors_kb")" "$(rd "$q/max_hw_sectors_kb")" \
			"$(rd "$q/max_segments")" "$(rd "$q/max_segment_size")" "$(rd "$q/dma_alignment")" "$(rd "$q/virt_boundary_mask")" \
			"$(rd "$q/nr_requests")" >> "$W/devices"
done
: > "$W/pci_devices"
for d in "$SYSFS"/bus/pci/devices/*; do
	[ -e "$d/vendor" ] || continue
	drv=$(basename "$(readlink "$d/driver" 2>/dev/null)" 2>/dev/null)
	printf '%s vendor=%s device=%s class=%s driver=%s\n' "$(basename "$d")" "$(rd "$d/vendor")" "$(rd "$d/device")" "$(rd "$d/class")" "${drv:-}" >> "$W/pci_devices"
done

# ---------------------------------------------------------------- tracing setup
OLD_BUFKB=$(rd "$T/buffer_size_kb")
OLD_ON=$(rd "$T/tracing_on")
grep -v '^#' "$T/set_event" > "$W/old_set_event" 2>/dev/null || : > "$W/old_set_event"
OLD_CLOCK=$(sed -n 's/.*\[\(.*\)\].*/\1/p' "$T/trace_clock" 2>/dev/null)
NCPU=$(cat "$W/vcpus"); is_uint "$NCPU" && [ "$NCPU" -gt 0 ] || NCPU=1
if [ -z "$BUFKB" ]; then
	BUFKB=204800
	if is_uint "$AVAILKB" && [ $((AVAILKB / 4 / NCPU)) -lt "$BUFKB" ]; then
		BUFKB=$((AVAILKB / 4 / NCPU))
	fi
	[ "$BUFKB" -lt 8192 ] && BUFKB=8192
fi
say "ring buffer: $BUFKB KiB per CPU x $NCPU CPUs (about $((BUFKB * 10)) events per CPU at ~100 bytes each)"

wr 0 "$T/tracing_on"
[ -e "$T/current_tracer" ] && wr nop "$T/current_tracer"
[ -e "$T/events/enable" ] && wr 0 "$T/events/enable"
wr "$BUFKB" "$T/buffer_size_kb" || warn "could not set buffer_size_kb=$BUFKB (not enough memory? use -b)"
wr local "$T/trace_clock"
: > "$T/trace" 2>/dev/null || warn "could not clear $T/trace"

: > "$W/enabled_events"
: > "$W/available_dma"
: > "$W/available_swiotlb"
for e in "$T"/events/dma/* "$T"/events/swiotlb/*; do
	[ -e "$e/enable" ] || continue
	sys=$(basename "$(dirname "$e")"); ev=$(basename "$e")
	echo "$ev" >> "$W/available_$sys"
	if [ "$sys" = dma ] || [ "$ev" = swiotlb_bounced ]; then
		if wr 1 "$e/enable"; then
			echo "$sys:$ev" >> "$W/enabled_events"
			sed -n 's/^print fmt: //p' "$e/format" > "$W/fmt/$ev" 2>/dev/null
		fi
	fi
done
grep -q '^swiotlb:swiotlb_bounced$' "$W/enabled_events" || warn "no swiotlb:swiotlb_bounced event: the replay cannot place allocations exactly"
grep -q '^dma:' "$W/enabled_events" || warn "no dma:* events in this kernel (they appeared in 6.10): the trace will not show bounce addresses"
trap 'wr 0 "$T/tracing_on"; warn "interrupted: tracing stopped, nothing written; events stay in $T/trace, raw files in $W"; exit 130' INT TERM
wr 1 "$T/tracing_on"

# ---------------------------------------------------------------- workloads
uptime_s() { awk '{print $1}' "$PROC/uptime" 2>/dev/null; }
i=0
while IFS= read -r spec; do
	i=$((i + 1))
	wname=${spec%%=*}
	wcmd=${spec#*=}
	d=$W/wl/$(printf '%03d' "$i")
	mkdir -p "$d"
	printf '%s\n' "$wname" > "$d/name"
	printf '%s\n' "$wcmd" > "$d/cmd"
	say "workload $i/$NW: $wname"
	wr "MARK begin $wname" "$T/trace_marker"
	uptime_s > "$d/t0"
	snap "$d/before"
	[ -e "$S/io_tlb_used_hiwater" ] && wr 0 "$S/io_tlb_used_hiwater"
	snap "$d/after_reset"
	if [ "$i" -eq "$NW" ] && [ "$MAIN_ARGS" -eq 1 ]; then
		if [ -n "$CPULIST" ]; then taskset -c "$CPULIST" "$@" < /dev/null; else "$@" < /dev/null; fi
	else
		if [ -n "$CPULIST" ]; then taskset -c "$CPULIST" sh -c "$wcmd" < /dev/null; else sh -c "$wcmd" < /dev/null; fi
	fi
	echo $? > "$d/rc"
	snap "$d/after"
	uptime_s > "$d/t1"
	wr "MARK end $wname" "$T/trace_marker"
	[ "$(cat "$d/rc")" = 0 ] || warn "workload $wname exited with status $(cat "$d/rc")"
done < "$W/wlist"

# ---------------------------------------------------------------- collect
wr 0 "$T/tracing_on"
trap - INT TERM
snap "$W/debugfs_final"
say "saving the trace"
cat "$T/trace" > "$W/trace.txt" || die "could not read $T/trace"
head -n 20 "$W/trace.txt" | grep 'entries-in-buffer/entries-written:' | head -n 1 > "$W/header_line"
HL=$(head -n 1 "$W/header_line")
HIB=$(printf '%s' "$HL" | sed -n 's/.*entries-written: *\([0-9]*\)\/\([0-9]*\) *#P:\([0-9]*\).*/\1/p')
HWR=$(printf '%s' "$HL" | sed -n 's/.*entries-written: *\([0-9]*\)\/\([0-9]*\) *#P:\([0-9]*\).*/\2/p')
HP=$(printf '%s' "$HL" | sed -n 's/.*entries-written: *\([0-9]*\)\/\([0-9]*\) *#P:\([0-9]*\).*/\3/p')
LOST=
if [ -n "$HIB" ] && [ -n "$HWR" ]; then
	LOST=$((HWR - HIB))
	[ "$LOST" -gt 0 ] && warn "$LOST events were lost (entries-written $HWR > entries-in-buffer $HIB): capture again with a larger -b or shorter workloads"
else
	warn "no '# entries-in-buffer/entries-written' header line in the trace"
fi
for c in "$T"/per_cpu/cpu*; do
	[ -r "$c/stats" ] && cp "$c/stats" "$W/cpu/$(basename "$c")"
done
rd "$T/trace_clock" > "$W/trace_clock"
printf 'buffer_size_kb=%s buffer_total_size_kb=%s\n' "$(rd "$T/buffer_size_kb")" "$(rd "$T/buffer_total_size_kb")" > "$W/buffer"
sh -c "$DMESG_CMD" 2>/dev/null | grep -i -E 'swiotlb|software IO TLB|buffer is full|callbacks suppressed' > "$W/dmesg_swiotlb"

# one pass over the text: event counts per workload and in total, marker
# timestamps, "[LOST N EVENTS]" lines
awk '
	/^#/ { next }
	/\[LOST [0-9]+ EVENTS\]/ { s = $0; sub(/.*\[LOST /, "", s); sub(/ EVENTS\].*/, "", s); lost += s; next }
	match($0, /[0-9]+\.[0-9]+: [A-Za-z0-9_]+:/) {
		ts = substr($0, RSTART, RLENGTH); ev = ts
		sub(/: .*/, "", ts); sub(/^[^ ]* /, "", ev); sub(/:$/, "", ev)
		if (ev == "tracing_mark_write") {
			msg = substr($0, RSTART + RLENGTH + 1)
			if (msg ~ /^MARK begin /) { cur = substr(msg, 12); print "B\t" cur "\t" ts }
			else if (msg ~ /^MARK end /) { print "E\t" substr(msg, 10) "\t" ts; cur = "" }
			next
		}
		total[ev]++
		if (cur != "") per[cur "\t" ev]++
	}
	END {
		for (e in total) print "T\t" e "\t" total[e]
		for (k in per) print "W\t" k "\t" per[k]
		print "L\t" lost + 0
	}' "$W/trace.txt" > "$W/scan"

TEXT_BYTES=$(wc -c < "$W/trace.txt" | tr -d ' ')
TEXT_LINES=$(wc -l < "$W/trace.txt" | tr -d ' ')
SHA=
if have sha256sum; then SHA=$(sha256sum "$W/trace.txt" | awk '{print $1}'); fi
printf '%s\n%s\n%s\n' "$TEXT_BYTES" "$TEXT_LINES" "$SHA" > "$W/textinfo"
if ! gzip -9 -n -c "$W/trace.txt" > "$TRACE_OUT" 2>/dev/null; then
	gzip -c "$W/trace.txt" > "$TRACE_OUT" || die "gzip failed"
fi
wc -c < "$TRACE_OUT" | tr -d ' ' > "$W/gzbytes"
rm -f "$W/trace.txt" "$W/dmesg_full"
{
	printf '%s\n' "$NAME" "$DESCRIPTION" "$CAPTURE_VERSION"
	date -u '+%Y-%m-%dT%H:%M:%SZ'
	printf '%s\n' "$BUFKB" "${CPULIST:-}"
} > "$W/capture"

# ---------------------------------------------------------------- restore
if [ "$RESTORE" -eq 1 ]; then
	while IFS= read -r e; do wr 0 "$T/events/${e%%:*}/${e#*:}/enable"; done < "$W/enabled_events"
	while IFS= read -r e; do
		[ -e "$T/events/${e%%:*}/${e#*:}/enable" ] && wr 1 "$T/events/${e%%:*}/${e#*:}/enable"
	done < "$W/old_set_event"
	[ -n "$OLD_CLOCK" ] && wr "$OLD_CLOCK" "$T/trace_clock"
	# back to the previous size: gives the ring buffer's memory back (the trace is saved)
	is_uint "$OLD_BUFKB" && wr "$OLD_BUFKB" "$T/buffer_size_kb"
	is_uint "$OLD_ON" && wr "$OLD_ON" "$T/tracing_on"
fi

# ---------------------------------------------------------------- meta.json
PY=${SWIOTLB_PYTHON:-python3}
if [ "$PY" != none ] && have "$PY"; then
	"$PY" - "$W" "$META_OUT" <<'PYEOF' || die "writing $META_OUT with $PY failed"
import json, os, re, sys

w, out = sys.argv[1], sys.argv[2]

def text(name):
    path = os.path.join(w, name)
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()

def lines(name):
    return [l for l in text(name).split("\n") if l != ""]

def first(name):
    ls = text(name).split("\n")
    return ls[0] if ls else ""

def num(v):
    v = v.strip()
    if re.fullmatch(r"-?[0-9]+", v):
        return int(v)
    if re.fullmatch(r"-?[0-9]+\.[0-9]+", v):
        return float(v)
    return None

def scalar(v):
    n = num(v)
    return n if n is not None else v.strip()

def orn(v):
    return v if v != "" else None

def snap(path):
    keys = ("io_tlb_nslabs", "io_tlb_used", "io_tlb_used_hiwater")
    parts = (first(path).split() + ["-", "-", "-"])[:3]
    return {k: (int(p) if p.isdigit() else None) for k, p in zip(keys, parts)}

cap = text("capture").split("\n")
tinfo = text("textinfo").split("\n")
pool = text("pool").split("\n")
scan = [l.split("\t") for l in lines("scan")]

header_line = first("header_line")
m = re.search(r"entries-written:\s*([0-9]+)/([0-9]+)\s+#P:([0-9]+)", header_line)
header = {"entries_in_buffer": int(m.group(1)) if m else None,
          "entries_written": int(m.group(2)) if m else None,
          "cpus": int(m.group(3)) if m else None,
          "header_line": header_line}
lost = header["entries_written"] - header["entries_in_buffer"] if m else None

per_cpu = {}
for c in sorted(os.listdir(os.path.join(w, "cpu")), key=lambda s: int(s[3:]) if s[3:].isdigit() else 0):
    st = {}
    for l in lines(os.path.join("cpu", c)):
        if ":" in l:
            k, v = l.split(":", 1)
            st[k.strip()] = scalar(v)
    per_cpu[c] = st
per_cpu_lost = sum(int(s.get("overrun", 0) or 0) + int(s.get("dropped events", 0) or 0)
                   for s in per_cpu.values())

print_fmt = {}
for e in lines("enabled_events"):
    ev = e.split(":", 1)[1]
    print_fmt[ev] = first(os.path.join("fmt", ev))

totals = {r[1]: int(r[2]) for r in scan if r[0] == "T"}
lost_lines = next((int(r[1]) for r in scan if r[0] == "L"), 0)

workloads = []
for d in sorted(os.listdir(os.path.join(w, "wl"))):
    p = os.path.join("wl", d)
    name = first(os.path.join(p, "name"))
    ts_b = [float(r[2]) for r in scan if r[0] == "B" and r[1] == name]
    ts_e = [float(r[2]) for r in scan if r[0] == "E" and r[1] == name]
    counts = {r[2]: int(r[3]) for r in scan if r[0] == "W" and r[1] == name}
    workloads.append({
        "name": name,
        "command": first(os.path.join(p, "cmd")),
        "exit_status": num(first(os.path.join(p, "rc"))),
        "marker_begin": "MARK begin " + name,
        "marker_end": "MARK end " + name,
        "guest_uptime_at_start_s": num(first(os.path.join(p, "t0"))),
        "guest_uptime_at_end_s": num(first(os.path.join(p, "t1"))),
        "trace_ts_begin": ts_b[0] if ts_b else None,
        "trace_ts_end": ts_e[-1] if ts_e else None,
        "swiotlb_debugfs": {k: snap(os.path.join(p, k)) for k in ("before", "after_reset", "after")},
        "event_counts": dict(sorted(counts.items())),
    })

virtio = []
for l in lines("virtio"):
    f = (l.split("|") + [""] * 9)[:9]
    virtio.append({"name": f[0], "pci": orn(f[1]), "driver": orn(f[2]), "device_id": orn(f[3]),
                   "features": f[4], "access_platform": f[5] == "true",
                   "version_1": f[6] == "1", "uses_dma_api": f[5] == "true",
                   "block_device": orn(f[7]), "net_device": orn(f[8])})

devices = []
for l in lines("devices"):
    f = (l.split("|") + [""] * 15)[:15]
    dev = {"role": f[3] or f[0], "kind": f[0], "pci": f[2], "driver": orn(f[3]),
           "uses_dma_api": f[4] == "true", "path": f[5]}
    if f[0] == "block":
        dev["block_device"] = f[1]
        for k, v in zip(("size", "lbs", "max_sectors_kb", "max_hw_sectors_kb", "max_segments",
                         "max_segment_size", "dma_alignment", "virt_boundary_mask", "nr_requests"), f[6:15]):
            dev[k] = v
    else:
        dev["net_device"] = f[1]
    devices.append(dev)

config = {}
for l in lines("config"):
    k, _, v = l.partition("\t")
    config[k] = v

dmesg_all = lines("dmesg_swiotlb")
meta = {
    "name": cap[0],
    "description": cap[1],
    "trace_file": cap[0] + ".trace.txt.gz",
    "trace_text_bytes": num(tinfo[0]),
    "trace_text_lines": num(tinfo[1]),
    "trace_text_sha256": orn(tinfo[2]),
    "trace_gz_bytes": num(first("gzbytes")),
    "trace_format_note": "raw text of tracefs 'trace' read once after all workloads (tracing_on=0), unmodified; "
                         "workload boundaries are trace_marker lines 'MARK begin NAME' / 'MARK end NAME'",
    "capture": {"tool": "swiotlb capture.sh", "version": num(cap[2]), "date_utc": cap[3],
                "buffer_size_kb_requested": num(cap[4]), "workload_cpus": orn(cap[5]),
                "json_writer": "python3", "warnings": lines("warnings")},
    "kernel": {"uname_a": first("uname_a"), "release": first("release"), "config": config},
    "host": {"os": first("os")},
    "guest": {"kernel_cmdline": first("cmdline"), "vcpus": num(first("vcpus")),
              "nproc": num(first("nproc")), "ram_mb": num(first("ram_mb")),
              "ram_mb_source": first("ram_mb_source"), "memtotal": first("memtotal")},
    "swiotlb": {
        "dmesg_lines_all": dmesg_all,
        "memblock_debug_lines": lines("memblock"),
        "pool_phys_start": orn(pool[0]),
        "pool_phys_end_inclusive": orn(pool[1]),
        "pool_bytes": num(pool[2]),
        "pool_note": first("pool_note"),
        "io_tlb_nslabs": num(pool[3]),
        "area_num": num(pool[4]),
        "area_num_note": first("area_note"),
        "buffer_full_messages": sum(1 for l in dmesg_all if "buffer is full" in l),
        "buffer_full_messages_before_capture": num(first("buffer_full_before")),
        "debugfs_files": lines("debugfs_files"),
        "debugfs_final": snap("debugfs_final"),
        "debugfs_note": "per workload: 'before' = read just before the workload, then io_tlb_used_hiwater was reset by "
                        "writing 0 ('after_reset'), 'after' = read right after the workload (hiwater is per-workload)",
    },
    "tracing": {
        "trace_clock": first("trace_clock"),
        "buffer": first("buffer"),
        "enabled_events": lines("enabled_events"),
        "available_dma_events": sorted(lines("available_dma")),
        "available_swiotlb_events": sorted(lines("available_swiotlb")),
        "print_fmt": print_fmt,
        "header": header,
        "per_cpu_stats": per_cpu,
        "lost_events": lost,
        "lost_events_from_header": lost,
        "lost_events_per_cpu_overrun_dropped": per_cpu_lost,
        "lost_event_lines_in_text": lost_lines,
    },
    "devices": devices,
    "virtio_devices": virtio,
    "pci_devices": lines("pci_devices"),
    "workloads": workloads,
    "event_counts_total": dict(sorted(totals.items())),
}
with open(out, "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=1)
    f.write("\n")
PYEOF
else
	# --- sh writer: same keys and types as the python3 writer above
	# jesc: JSON string body of stdin (one line)
	TAB=$(printf '\t')
	jesc() { tr -d '\000-\010\013-\037\177' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e "s/$TAB/\\\\t/g"; }
	# js VALUE: JSON string
	js() { printf '"%s"' "$(printf '%s' "$1" | jesc)"; }
	# jsn VALUE: JSON string, or null when empty
	jsn() { if [ -n "$1" ]; then js "$1"; else printf 'null'; fi; }
	# jn VALUE: JSON number (integer or decimal), or null
	jn() {
		case $1 in
		''|-|*[!0-9.-]*|*.*.*|.*|*.|-*-*|?*-*) printf 'null' ;;
		*.*) printf '%s' "$1" ;;
		*) printf '%s' "$1" | sed 's/^\(-\{0,1\}\)0*\([0-9]\)/\1\2/' ;;
		esac
	}
	# jarr FILE: JSON array of the file's non-empty lines
	jarr() {
		printf '['
		sep=
		if [ -r "$1" ]; then
			while IFS= read -r l || [ -n "$l" ]; do
				[ -n "$l" ] || continue
				printf '%s' "$sep"; js "$l"; sep=', '
			done < "$1"
		fi
		printf ']'
	}
	jsorted() { sort "$1" > "$W/sorted.tmp"; jarr "$W/sorted.tmp"; }
	# jsnap FILE: debugfs snapshot object
	jsnap() {
		read -r a b c < "$1"
		printf '{"io_tlb_nslabs": %s, "io_tlb_used": %s, "io_tlb_used_hiwater": %s}' "$(jn "$a")" "$(jn "$b")" "$(jn "$c")"
	}
	# jcounts KEYCOL VALCOL < lines (tab separated) -> {"k": n, ...} sorted
	jcounts() {
		printf '{'
		sep=
		sort | while IFS='	' read -r k v; do
			printf '%s%s: %s' "$sep" "$(js "$k")" "$(jn "$v")"; sep=', '
		done
		printf '}'
	}
	line() { if [ -r "$W/$1" ]; then head -n 1 "$W/$1"; fi; }
	nth() { sed -n "${2}p" "$W/$1"; }

	PCLOST=0
	for c in "$W"/cpu/cpu*; do
		[ -r "$c" ] || continue
		o=$(sed -n 's/^overrun: *//p' "$c"); dr=$(sed -n 's/^dropped events: *//p' "$c")
		PCLOST=$((PCLOST + ${o:-0} + ${dr:-0}))
	done
	LOSTL=$(awk -F '\t' '$1 == "L" { print $2 }' "$W/scan")
	BFULL=$(grep -c 'buffer is full' "$W/dmesg_swiotlb")

	{
	printf '{\n'
	printf ' "name": %s,\n' "$(js "$(nth capture 1)")"
	printf ' "description": %s,\n' "$(js "$(nth capture 2)")"
	printf ' "trace_file": %s,\n' "$(js "$NAME.trace.txt.gz")"
	printf ' "trace_text_bytes": %s,\n' "$(jn "$(nth textinfo 1)")"
	printf ' "trace_text_lines": %s,\n' "$(jn "$(nth textinfo 2)")"
	printf ' "trace_text_sha256": %s,\n' "$(jsn "$(nth textinfo 3)")"
	printf ' "trace_gz_bytes": %s,\n' "$(jn "$(line gzbytes)")"
	printf ' "trace_format_note": %s,\n' "$(js "raw text of tracefs 'trace' read once after all workloads (tracing_on=0), unmodified; workload boundaries are trace_marker lines 'MARK begin NAME' / 'MARK end NAME'")"
	printf ' "capture": {"tool": "swiotlb capture.sh", "version": %s, "date_utc": %s, "buffer_size_kb_requested": %s, "workload_cpus": %s, "json_writer": "sh", "warnings": %s},\n' \
		"$(jn "$(nth capture 3)")" "$(js "$(nth capture 4)")" "$(jn "$(nth capture 5)")" "$(jsn "$(nth capture 6)")" "$(jarr "$W/warnings")"
	printf ' "kernel": {"uname_a": %s, "release": %s, "config": ' "$(js "$(line uname_a)")" "$(js "$(line release)")"
	jcounts_str() {
		printf '{'
		sep=
		while IFS='	' read -r k v; do
			printf '%s%s: %s' "$sep" "$(js "$k")" "$(js "$v")"; sep=', '
		done < "$1"
		printf '}'
	}
	jcounts_str "$W/config"
	printf '},\n'
	printf ' "host": {"os": %s},\n' "$(js "$(line os)")"
	printf ' "guest": {"kernel_cmdline": %s, "vcpus": %s, "nproc": %s, "ram_mb": %s, "ram_mb_source": %s, "memtotal": %s},\n' \
		"$(js "$(line cmdline)")" "$(jn "$(line vcpus)")" "$(jn "$(line nproc)")" "$(jn "$(line ram_mb)")" "$(js "$(line ram_mb_source)")" "$(js "$(line memtotal)")"
	printf ' "swiotlb": {\n'
	printf '  "dmesg_lines_all": %s,\n' "$(jarr "$W/dmesg_swiotlb")"
	printf '  "memblock_debug_lines": %s,\n' "$(jarr "$W/memblock")"
	printf '  "pool_phys_start": %s,\n' "$(jsn "$(nth pool 1)")"
	printf '  "pool_phys_end_inclusive": %s,\n' "$(jsn "$(nth pool 2)")"
	printf '  "pool_bytes": %s,\n' "$(jn "$(nth pool 3)")"
	printf '  "pool_note": %s,\n' "$(js "$(line pool_note)")"
	printf '  "io_tlb_nslabs": %s,\n' "$(jn "$(nth pool 4)")"
	printf '  "area_num": %s,\n' "$(jn "$(nth pool 5)")"
	printf '  "area_num_note": %s,\n' "$(js "$(line area_note)")"
	printf '  "buffer_full_messages": %s,\n' "$(jn "$BFULL")"
	printf '  "buffer_full_messages_before_capture": %s,\n' "$(jn "$(line buffer_full_before)")"
	printf '  "debugfs_files": %s,\n' "$(jarr "$W/debugfs_files")"
	printf '  "debugfs_final": %s,\n' "$(jsnap "$W/debugfs_final")"
	printf '  "debugfs_note": %s\n' "$(js "per workload: 'before' = read just before the workload, then io_tlb_used_hiwater was reset by writing 0 ('after_reset'), 'after' = read right after the workload (hiwater is per-workload)")"
	printf ' },\n'
	printf ' "tracing": {\n'
	printf '  "trace_clock": %s,\n' "$(js "$(line trace_clock)")"
	printf '  "buffer": %s,\n' "$(js "$(line buffer)")"
	printf '  "enabled_events": %s,\n' "$(jarr "$W/enabled_events")"
	printf '  "available_dma_events": %s,\n' "$(jsorted "$W/available_dma")"
	printf '  "available_swiotlb_events": %s,\n' "$(jsorted "$W/available_swiotlb")"
	printf '  "print_fmt": {'
	sep=
	while IFS= read -r e; do
		ev=${e#*:}
		printf '%s%s: %s' "$sep" "$(js "$ev")" "$(js "$(head -n 1 "$W/fmt/$ev" 2>/dev/null)")"; sep=', '
	done < "$W/enabled_events"
	printf '},\n'
	printf '  "header": {"entries_in_buffer": %s, "entries_written": %s, "cpus": %s, "header_line": %s},\n' \
		"$(jn "$HIB")" "$(jn "$HWR")" "$(jn "$HP")" "$(js "$HL")"
	printf '  "per_cpu_stats": {'
	sep=
	for c in $(for x in "$W"/cpu/cpu*; do [ -e "$x" ] && printf '%s\n' "${x##*/cpu}"; done | sort -n); do
		printf '%s"cpu%s": {' "$sep" "$c"; sep=', '
		s2=
		while IFS= read -r l; do
			case $l in *:*) ;; *) continue ;; esac
			k=${l%%:*}; v=$(printf '%s' "${l#*:}" | sed 's/^ *//; s/ *$//')
			if [ "$(jn "$v")" = null ]; then vv=$(js "$v"); else vv=$(jn "$v"); fi
			printf '%s%s: %s' "$s2" "$(js "$k")" "$vv"; s2=', '
		done < "$W/cpu/cpu$c"
		printf '}'
	done
	printf '},\n'
	printf '  "lost_events": %s,\n' "$(jn "$LOST")"
	printf '  "lost_events_from_header": %s,\n' "$(jn "$LOST")"
	printf '  "lost_events_per_cpu_overrun_dropped": %s,\n' "$(jn "$PCLOST")"
	printf '  "lost_event_lines_in_text": %s\n' "$(jn "${LOSTL:-0}")"
	printf ' },\n'
	printf ' "devices": ['
	sep=
	while IFS='|' read -r kind dn pci drv uses path size lbs msk mhk mseg mss dal vbm nrq; do
		printf '%s\n  {"role": %s, "kind": %s, "pci": %s, "driver": %s, "uses_dma_api": %s, "path": %s' "$sep" \
			"$(js "${drv:-$kind}")" "$(js "$kind")" "$(js "$pci")" "$(jsn "$drv")" "$uses" "$(js "$path")"
		if [ "$kind" = block ]; then
			printf ', "block_device": %s, "size": %s, "lbs": %s, "max_sectors_kb": %s, "max_hw_sectors_kb": %s, "max_segments": %s, "max_segment_size": %s, "dma_alignment": %s, "virt_boundary_mask": %s, "nr_requests": %s}' \
				"$(js "$dn")" "$(js "$size")" "$(js "$lbs")" "$(js "$msk")" "$(js "$mhk")" "$(js "$mseg")" "$(js "$mss")" "$(js "$dal")" "$(js "$vbm")" "$(js "$nrq")"
		else
			printf ', "net_device": %s}' "$(js "$dn")"
		fi
		sep=,
	done < "$W/devices"
	printf '],\n'
	printf ' "virtio_devices": ['
	sep=
	while IFS='|' read -r vn pci drv devid feat ap b32 blk net; do
		v1=false; [ "$b32" = 1 ] && v1=true
		printf '%s\n  {"name": %s, "pci": %s, "driver": %s, "device_id": %s, "features": %s, "access_platform": %s, "version_1": %s, "uses_dma_api": %s, "block_device": %s, "net_device": %s}' "$sep" \
			"$(js "$vn")" "$(jsn "$pci")" "$(jsn "$drv")" "$(jsn "$devid")" "$(js "$feat")" "$ap" "$v1" "$ap" "$(jsn "$blk")" "$(jsn "$net")"
		sep=,
	done < "$W/virtio"
	printf '],\n'
	printf ' "pci_devices": %s,\n' "$(jarr "$W/pci_devices")"
	printf ' "workloads": ['
	sep=
	for d in "$W"/wl/*; do
		[ -d "$d" ] || continue
		wn=$(head -n 1 "$d/name")
		tb=$(awk -F '\t' -v n="$wn" '$1 == "B" && $2 == n { print $3; exit }' "$W/scan")
		te=$(awk -F '\t' -v n="$wn" '$1 == "E" && $2 == n { t = $3 } END { print t }' "$W/scan")
		printf '%s\n  {"name": %s, "command": %s, "exit_status": %s, "marker_begin": %s, "marker_end": %s, "guest_uptime_at_start_s": %s, "guest_uptime_at_end_s": %s, "trace_ts_begin": %s, "trace_ts_end": %s, ' "$sep" \
			"$(js "$wn")" "$(js "$(head -n 1 "$d/cmd")")" "$(jn "$(cat "$d/rc")")" "$(js "MARK begin $wn")" "$(js "MARK end $wn")" \
			"$(jn "$(cat "$d/t0")")" "$(jn "$(cat "$d/t1")")" "$(jn "$tb")" "$(jn "$te")"
		printf '"swiotlb_debugfs": {"before": %s, "after_reset": %s, "after": %s}, ' "$(jsnap "$d/before")" "$(jsnap "$d/after_reset")" "$(jsnap "$d/after")"
		printf '"event_counts": %s}' "$(awk -F '\t' -v n="$wn" '$1 == "W" && $2 == n { print $3 "\t" $4 }' "$W/scan" | jcounts)"
		sep=,
	done
	printf '],\n'
	printf ' "event_counts_total": %s\n' "$(awk -F '\t' '$1 == "T" { print $2 "\t" $3 }' "$W/scan" | jcounts)"
	printf '}\n'
	} > "$META_OUT"
fi

if [ "$KEEP" -eq 1 ]; then
	say "raw files kept in $W"
else
	rm -rf "$W"
fi
say "wrote $TRACE_OUT and $META_OUT"
say "next: swiotlb trace stats $TRACE_OUT; swiotlb replay $TRACE_OUT --meta $META_OUT"
exit 0
