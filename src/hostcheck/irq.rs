//! NIC interrupts: which IRQs belong to network interfaces (the device's
//! `msi_irqs`, and `/proc/interrupts` names that carry the interface or
//! device name), and whether their affinity lets them land on the CPUs
//! orderd runs on. A NIC queue interrupting an orderd core steals that
//! core from its executor; `tuning/irq-layout.sh` moves them off.

use std::collections::BTreeMap;
use std::path::Path;

use super::sysfs::{format_cpu_list, parse_cpu_list, read_line};
use super::{Check, Status, Target};

/// One interrupt line of a network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicIrq {
    /// The IRQ number.
    pub irq: u32,
    /// Its name in `/proc/interrupts` (e.g. `virtio2-input.0`).
    pub name: String,
    /// The interface it serves.
    pub iface: String,
}

/// The `(irq, action name)` rows of `/proc/interrupts` with a number.
pub fn parse_interrupts(text: &str) -> Vec<(u32, String)> {
    text.lines()
        .filter_map(|line| {
            let (num, rest) = line.trim_start().split_once(':')?;
            let irq = num.trim().parse().ok()?;
            let name = rest.split_whitespace().last().unwrap_or("").to_owned();
            Some((irq, name))
        })
        .collect()
}

/// The NIC IRQs of this host (interfaces with a device, not `lo`).
pub fn nic_irqs() -> std::io::Result<Vec<NicIrq>> {
    let table = parse_interrupts(&std::fs::read_to_string("/proc/interrupts")?);
    let mut found: BTreeMap<u32, NicIrq> = BTreeMap::new();
    for entry in std::fs::read_dir("/sys/class/net")? {
        let entry = entry?;
        let iface = entry.file_name().to_string_lossy().into_owned();
        let device = entry.path().join("device");
        let Ok(real) = std::fs::canonicalize(&device) else { continue }; // virtual: lo, bridges, ifb
        let dev_name = real.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut irqs: Vec<u32> = Vec::new();
        // PCI NICs list their vectors; a virtio NIC's live on its PCI parent.
        let mut dirs = vec![real.join("msi_irqs")];
        if dev_name.starts_with("virtio") {
            dirs.extend(real.parent().map(|p| p.join("msi_irqs")));
        }
        for dir in dirs {
            if let Ok(list) = std::fs::read_dir(&dir) {
                irqs.extend(list.flatten().filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok()));
            }
        }
        for (irq, name) in &table {
            let by_name = name.starts_with(&format!("{iface}-")) || name == &iface || name.starts_with(&format!("{dev_name}-"));
            // A virtio parent also carries its sibling devices' vectors: keep
            // only those named after this device when names are available.
            let by_msi = irqs.contains(irq) && (!name.starts_with("virtio") || name.starts_with(&format!("{dev_name}-")));
            if by_name || by_msi {
                found.entry(*irq).or_insert_with(|| NicIrq { irq: *irq, name: name.clone(), iface: iface.clone() });
            }
        }
    }
    Ok(found.into_values().collect())
}

/// Where an IRQ may be delivered: `smp_affinity_list`, the configured
/// mask (`effective_affinity_list` lags behind a change until the next
/// interrupt moves it, so it is not used).
pub fn irq_affinity(irq: u32) -> std::io::Result<Vec<usize>> {
    let text = read_line(Path::new("/proc/irq").join(irq.to_string()).join("smp_affinity_list"))?;
    parse_cpu_list(&text).ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, text))
}

/// The NIC IRQ check.
pub fn checks(target: &Target) -> Vec<Check> {
    let irqs = match nic_irqs() {
        Ok(i) => i,
        Err(e) => return vec![Check::new("nic_irqs", Status::Skip, format!("cannot read /proc/interrupts or /sys/class/net: {e}"))],
    };
    if irqs.is_empty() {
        return vec![Check::new("nic_irqs", Status::Pass, "no NIC interrupts found (no physical or virtio NIC with IRQs)")];
    }
    let mut on_ours = Vec::new();
    let mut unreadable = Vec::new();
    for nic in &irqs {
        match irq_affinity(nic.irq) {
            Ok(cpus) => {
                let hit: Vec<usize> = cpus.iter().copied().filter(|c| target.cpus.contains(c)).collect();
                if !hit.is_empty() {
                    on_ours.push(format!("{} {} ({})→{}", nic.irq, nic.name, nic.iface, format_cpu_list(&hit)));
                }
            }
            Err(_) => unreadable.push(nic.irq.to_string()),
        }
    }
    let irqbalance = irqbalance_running();
    let mut checks = Vec::new();
    if !on_ours.is_empty() {
        let all = target.online.as_ref().is_some_and(|o| o.iter().all(|c| target.cpus.contains(c)));
        let fix = if all {
            "orderd uses every CPU, so the NIC has nowhere else to go: leave one CPU out of --cores and run tuning/irq-layout.sh --apply"
        } else {
            "run tuning/irq-layout.sh (dry run) then --apply to move them to the CPUs orderd does not use"
        };
        let note = if irqbalance {
            " (irqbalance is running and will move them back: stop it or ban orderd's CPUs with IRQBALANCE_BANNED_CPULIST)"
        } else {
            ""
        };
        checks.push(
            Check::new(
                "nic_irqs",
                Status::Warn,
                format!("{} of {} NIC IRQs can interrupt orderd's CPUs: {}", on_ours.len(), irqs.len(), on_ours.join(", ")),
            )
            .fix(format!("{fix}{note}")),
        );
    } else if unreadable.len() == irqs.len() {
        checks.push(Check::new(
            "nic_irqs",
            Status::Skip,
            format!("cannot read /proc/irq/*/smp_affinity_list for NIC IRQs {}", unreadable.join(",")),
        ));
    } else {
        checks.push(Check::new("nic_irqs", Status::Pass, format!("none of {} NIC IRQs is routed to orderd's CPUs", irqs.len())));
    }
    checks
}

/// True when an `irqbalance` process is running (read from /proc).
fn irqbalance_running() -> bool {
    std::fs::read_dir("/proc").into_iter().flatten().flatten().any(|e| {
        e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            && read_line(e.path().join("comm")).is_ok_and(|c| c == "irqbalance")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupts_table_parses() {
        let text = "           CPU0       CPU1\n 38:          0       3395 PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0\nNMI:          0          0   Non-maskable interrupts\n";
        assert_eq!(parse_interrupts(text), vec![(38, "virtio2-input.0".to_owned())]);
    }
}
