#!/usr/bin/env bash
# irq-affinity.sh: put each NIC queue's interrupt, receive steering (RPS/RFS) and transmit steering (XPS) on the
# CPUs that run ringcast reactors, so a packet is processed on the core that reads its socket.
#
#   tuning/irq-affinity.sh [--apply] [--cpus LIST] [--rfs-entries N] [IFACE ...]
#
#   IFACE          interfaces to spread (default: every interface backed by a device, i.e. not lo/veth/bridges)
#   --cpus LIST    reactor CPUs, e.g. 2-15 (default: the CPUs of a running `ringcast` process, else all online)
#   --rfs-entries  size of the global RFS flow table (net.core.rps_sock_flow_entries; default 1048576)
#   --apply        write the settings; without it the script only prints what it would write (dry run)
#
# What it sets, per interface with Q queues on R reactor CPUs c[0..R-1]:
#   * IRQ of queue q            -> /proc/irq/N/smp_affinity_list = c[q mod R]   (queue number taken from the IRQ
#                                  name: "eth0-TxRx-3", "virtio2-input.3", "mlx5_comp3@..."; else its ordinal)
#   * rx-q/rps_cpus             -> 0 when there are at least as many rx queues as reactor CPUs (the NIC already
#                                  spreads flows); otherwise the mask of every reactor CPU, so flows hashed onto a
#                                  few queues are still processed on all cores
#   * rx-q/rps_flow_cnt         -> rfs-entries / Q: Receive Flow Steering sends each flow's protocol processing to
#                                  the CPU that last read the socket, which is the reactor owning the connection
#                                  (SO_REUSEPORT picks the reactor by the 4-tuple hash, not by the receiving CPU,
#                                  so RFS is what brings the two together)
#   * tx-q/xps_cpus             -> the reactor CPUs c[i] with i mod Q == q, so a reactor transmits on "its" queue
#                                  and completions interrupt the same core
#
# Stop irqbalance first (systemctl disable --now irqbalance), or it moves the IRQs back within seconds.
# The settings do not survive a reboot or a driver reload: run it from the ringcast unit's ExecStartPre=+ or a
# oneshot unit ordered before ringcast.service.
set -euo pipefail

apply=0
cpus_arg=""
rfs_entries=1048576
ifaces=()
while [ $# -gt 0 ]; do
    case "$1" in
        --apply) apply=1 ;;
        --cpus) cpus_arg="${2:?--cpus needs a list such as 2-15}"; shift ;;
        --rfs-entries) rfs_entries="${2:?--rfs-entries needs a number}"; shift ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) ifaces+=("$1") ;;
    esac
    shift
done

# Expands "0-3,8,10-11" into "0 1 2 3 8 10 11".
expand_list() {
    local part a b out=()
    IFS=',' read -ra parts <<<"$1"
    for part in "${parts[@]}"; do
        [ -z "$part" ] && continue
        if [[ "$part" == *-* ]]; then
            a=${part%-*}; b=${part#*-}
            for ((i = a; i <= b; i++)); do out+=("$i"); done
        else
            out+=("$part")
        fi
    done
    echo "${out[@]}"
}

# The hex CPU mask the kernel wants in rps_cpus/xps_cpus: 32-bit words, most significant first, comma-separated.
mask_of() {
    local cpu max=0 words=() i out=""
    for cpu in "$@"; do ((cpu > max)) && max=$cpu; done
    local nwords=$((max / 32 + 1))
    for ((i = 0; i < nwords; i++)); do words[i]=0; done
    for cpu in "$@"; do words[cpu / 32]=$((words[cpu / 32] | (1 << (cpu % 32)))); done
    for ((i = nwords - 1; i >= 0; i--)); do
        out+=$(printf '%08x' "${words[i]}")
        ((i > 0)) && out+=","
    done
    echo "$out"
}

# Writes (or, in a dry run, shows) one setting.
put() {
    local value="$1" file="$2"
    if [ ! -e "$file" ]; then
        echo "skip   $file (absent: the driver does not offer it)"
        return
    fi
    local now
    now=$(cat "$file" 2>/dev/null || echo "?")
    if [ "$apply" = 1 ]; then
        if echo "$value" >"$file" 2>/dev/null; then
            echo "wrote  $value > $file (was $now)"
        else
            echo "FAILED $value > $file (was $now; run as root, and not inside a container)" >&2
        fi
    else
        echo "would  echo $value > $file (now $now)"
    fi
}

# Reactor CPUs.
if [ -n "$cpus_arg" ]; then
    cpu_list="$cpus_arg"
elif pid=$(pgrep -o -x ringcast 2>/dev/null); then
    cpu_list=$(awk '/^Cpus_allowed_list:/ {print $2}' "/proc/$pid/status")
    echo "# reactor CPUs from the running ringcast (pid $pid): $cpu_list"
else
    cpu_list=$(cat /sys/devices/system/cpu/online)
    echo "# no ringcast running and no --cpus: using every online CPU ($cpu_list)"
fi
read -ra cpus <<<"$(expand_list "$cpu_list")"
ncpus=${#cpus[@]}
[ "$ncpus" -gt 0 ] || { echo "no CPUs in '$cpu_list'" >&2; exit 2; }

if [ ${#ifaces[@]} -eq 0 ]; then
    for dev in /sys/class/net/*; do
        [ -e "$dev/device" ] && ifaces+=("$(basename "$dev")")
    done
fi
[ ${#ifaces[@]} -gt 0 ] || { echo "no device-backed network interface found" >&2; exit 2; }

[ "$apply" = 1 ] || echo "# dry run: nothing is written; pass --apply (as root) to write"
put "$rfs_entries" /proc/sys/net/core/rps_sock_flow_entries

for ifc in "${ifaces[@]}"; do
    q="/sys/class/net/$ifc/queues"
    [ -d "$q" ] || { echo "skip   $ifc: no such interface"; continue; }
    echo "# $ifc -> reactor CPUs ${cpus[*]}"

    # The queue IRQs: the MSI vectors of the interface's PCI device (the device itself, or the parent of a
    # virtio device), named in /proc/interrupts; control vectors (config, async, admin, ...) stay where they are.
    irqs=()
    for d in "/sys/class/net/$ifc/device" "/sys/class/net/$ifc/device/.."; do
        if [ -d "$d/msi_irqs" ]; then
            for f in "$d"/msi_irqs/*; do irqs+=("$(basename "$f")"); done
            break
        fi
    done
    if [ ${#irqs[@]} -eq 0 ]; then
        while read -r n; do irqs+=("$n"); done < <(awk -v i="$ifc" '$NF ~ i {sub(":", "", $1); print $1}' /proc/interrupts)
    fi
    ordinal=0
    for irq in $(printf '%s\n' "${irqs[@]}" | sort -n); do
        name=$(awk -v n="$irq:" '$1 == n {print $NF}' /proc/interrupts)
        case "$name" in
            ""|*config*|*async*|*admin*|*ctrl*|*fw*|*mgmt*|*event*) continue ;;
        esac
        if [[ "$name" =~ ([0-9]+)(@.*)?$ ]]; then qn=${BASH_REMATCH[1]}; else qn=$ordinal; fi
        cpu=${cpus[qn % ncpus]}
        echo "# irq $irq ($name): queue $qn -> cpu $cpu"
        put "$cpu" "/proc/irq/$irq/smp_affinity_list"
        ordinal=$((ordinal + 1))
    done

    rxq=("$q"/rx-*)
    txq=("$q"/tx-*)
    nrx=${#rxq[@]}
    ntx=${#txq[@]}
    for rx in "${rxq[@]}"; do
        if [ "$nrx" -ge "$ncpus" ]; then rps=0; else rps=$(mask_of "${cpus[@]}"); fi
        put "$rps" "$rx/rps_cpus"
        put $((rfs_entries / nrx)) "$rx/rps_flow_cnt"
    done
    for tx in "${txq[@]}"; do
        t=${tx##*tx-}
        mine=()
        for ((i = 0; i < ncpus; i++)); do
            ((i % ntx == t)) && mine+=("${cpus[i]}")
        done
        [ ${#mine[@]} -gt 0 ] || continue
        put "$(mask_of "${mine[@]}")" "$tx/xps_cpus"
    done
done
