#!/usr/bin/env bash
# Move NIC interrupts off the CPUs orderd runs on.
#
# Finds each network interface's IRQs (the device's msi_irqs, a virtio
# NIC's PCI parent's vectors named after it, and /proc/interrupts rows named
# after the interface), reads where each may be delivered
# (/proc/irq/N/smp_affinity_list) and, for those that can land on an orderd
# CPU, sets the affinity to the housekeeping CPUs (every online CPU orderd
# does not use, unless --housekeeping says otherwise).
#
# Dry run by default: prints what it would do and touches nothing. Only
# --apply writes /proc/irq/N/smp_affinity_list (root needed). Kernel-managed
# IRQs (many multi-queue NICs and NVMe) refuse the write (EIO): they are
# reported and left alone. irqbalance moves IRQs back: stop it, or ban
# orderd's CPUs (IRQBALANCE_BANNED_CPULIST in /etc/default/irqbalance).
# Settings written to /proc do not survive a reboot: run this from a boot
# unit (or use irqbalance's ban list) to keep them.
#
# Usage: tuning/irq-layout.sh --cores LIST [--housekeeping LIST] [--dry-run | --apply]
#   --cores LIST          orderd's CPUs, as in `orderd serve --cores` (e.g. 1,2,3);
#                         default: $ORDERD_CORES
#   --housekeeping LIST   CPUs to send NIC IRQs to (default: the other online CPUs)
#   --dry-run             print the plan only (default)
#   --apply               write the new affinities
set -euo pipefail

usage() {
    sed -n 's/^# \{0,1\}//; /^Usage:/,/^--apply/p' "$0" | sed -n '1,6p' >&2
    exit 2
}

cores=${ORDERD_CORES:-}
housekeeping=""
apply=0
while [ $# -gt 0 ]; do
    case "$1" in
        --cores) cores=${2:?--cores needs a list}; shift 2 ;;
        --housekeeping) housekeeping=${2:?--housekeeping needs a list}; shift 2 ;;
        --dry-run) apply=0; shift ;;
        --apply) apply=1; shift ;;
        -h | --help) usage ;;
        *) echo "irq-layout: unknown argument $1" >&2; usage ;;
    esac
done

# Expand a CPU list such as 0-3,8 into one number per line.
expand() {
    local part a b
    local IFS=,
    for part in $1; do
        [ -z "$part" ] && continue
        if [[ $part == *-* ]]; then
            a=${part%-*}
            b=${part#*-}
            seq "$a" "$b"
        else
            echo "$part"
        fi
    done
}

# Join numbers (one per line on stdin) into a comma list.
join() { paste -sd, -; }

online=$(expand "$(cat /sys/devices/system/cpu/online)" | sort -n)
if [ -z "$cores" ] || [ "$cores" = all ]; then
    echo "irq-layout: orderd uses every CPU (--cores ${cores:-unset}): there is no CPU to move NIC IRQs to;" >&2
    echo "irq-layout: pass orderd's CPU list with --cores (and leave at least one CPU out of it)" >&2
    exit 1
fi
ours=$(expand "$cores" | sort -n)
for c in $ours; do
    grep -qx "$c" <<<"$online" || { echo "irq-layout: CPU $c is not online" >&2; exit 1; }
done
if [ -z "$housekeeping" ]; then
    housekeeping=$(comm -23 <(echo "$online") <(echo "$ours") | sort -n | join)
fi
if [ -z "$housekeeping" ]; then
    echo "irq-layout: --cores $cores covers every online CPU: leave at least one for interrupts" >&2
    exit 1
fi
for c in $(expand "$housekeeping"); do
    if grep -qx "$c" <<<"$ours"; then
        echo "irq-layout: housekeeping CPU $c is one of orderd's CPUs" >&2
        exit 1
    fi
done

# NIC IRQ numbers with their interface, "irq iface" per line.
nic_irqs() {
    local dev iface real name irq line
    for dev in /sys/class/net/*/device; do
        [ -e "$dev" ] || continue
        iface=$(basename "$(dirname "$dev")")
        real=$(readlink -f "$dev")
        name=$(basename "$real")
        local dirs=("$real/msi_irqs")
        [[ $name == virtio* ]] && dirs+=("$(dirname "$real")/msi_irqs")
        for d in "${dirs[@]}"; do
            [ -d "$d" ] || continue
            for irq in "$d"/*; do
                irq=$(basename "$irq")
                line=$(grep -E "^ *$irq:" /proc/interrupts || true)
                # A virtio PCI parent also carries sibling devices' vectors.
                if [[ $name == virtio* ]] && [[ $line != *" $name-"* ]]; then
                    continue
                fi
                echo "$irq $iface"
            done
        done
        grep -E " ($iface|$name)(-[^ ]*)?$" /proc/interrupts | sed -E 's/^ *([0-9]+):.*/\1/' | grep -E '^[0-9]+$' | sed "s/\$/ $iface/" || true
    done | sort -n -u -k1,1
}

irqs=$(nic_irqs)
if [ -z "$irqs" ]; then
    echo "irq-layout: no NIC IRQs found (no physical or virtio NIC): nothing to do"
    exit 0
fi
if pgrep -x irqbalance >/dev/null 2>&1; then
    echo "irq-layout: NOTE irqbalance is running and will move IRQs back; stop it or set IRQBALANCE_BANNED_CPULIST=$cores"
fi
mode=$([ "$apply" = 1 ] && echo apply || echo dry-run)
echo "irq-layout ($mode): orderd CPUs $cores, NIC IRQs go to CPUs $housekeeping"
moved=0
failed=0
while read -r irq iface; do
    label=$(grep -E "^ *$irq:" /proc/interrupts | awk '{print $NF}')
    current=$(cat "/proc/irq/$irq/smp_affinity_list" 2>/dev/null || echo "?")
    hit=$(comm -12 <(expand "$current" | sort) <(echo "$ours" | sort) | sort -n | join)
    if [ -z "$hit" ]; then
        echo "  irq $irq ($label, $iface): $current — already off orderd's CPUs"
        continue
    fi
    if [ "$apply" = 1 ]; then
        if echo "$housekeeping" >"/proc/irq/$irq/smp_affinity_list" 2>/dev/null; then
            echo "  irq $irq ($label, $iface): $current -> $(cat "/proc/irq/$irq/smp_affinity_list") (the kernel moves it at its next interrupt)"
            moved=$((moved + 1))
        else
            echo "  irq $irq ($label, $iface): $current -> $housekeeping REFUSED (kernel-managed IRQ, or not root)"
            failed=$((failed + 1))
        fi
    else
        echo "  irq $irq ($label, $iface): $current -> $housekeeping (would move; hits orderd CPU $hit)"
        moved=$((moved + 1))
    fi
done <<<"$irqs"
if [ "$apply" = 1 ]; then
    echo "irq-layout: moved $moved, refused $failed"
    [ "$failed" = 0 ]
else
    echo "irq-layout: dry run, nothing changed: $moved IRQ(s) would move; rerun with --apply"
fi
