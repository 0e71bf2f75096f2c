// Pure QEMU command lines: the appliance VM (qemuArgv), the accelerator probe guest (probeArgv), the guest's
// kernel command line and its fw_cfg config text. Data in, argv out; nothing here spawns or touches files.

export type Accel = "kvm" | "hvf" | "tcg";
export const ACCELS: readonly Accel[] = ["kvm", "hvf", "tcg"];

/** Name of the virtio-serial port the guest's /init watches; must match guest/init. */
export const LIFELINE_PORT = "vmdib.lifeline";
/** The line the guest writes on the lifeline once sshd listens; must match guest/init. */
export const READY_MARKER = "VMDIB-READY";
/** fw_cfg names live under opt/ (QEMU reserves the rest); guest/init reads /sys/firmware/qemu_fw_cfg/by_name/opt/vmdib. */
export const FW_CFG_PREFIX = "opt/vmdib/";

/** A host directory shared with the guest over virtio-9p. */
export interface Share {
  /** 9p mount tag, [A-Za-z0-9_-], at most 31 characters. */
  readonly tag: string;
  readonly hostPath: string;
  /** Absolute mount point in the guest, no whitespace. */
  readonly guestPath: string;
  readonly readonly: boolean;
}

/** A host file attached as a virtio disk, found in the guest as /dev/disk/by-id/virtio-<serial>. */
export interface Disk {
  readonly path: string;
  /** At most 20 characters (virtio-blk's limit), [A-Za-z0-9_-]. */
  readonly serial: string;
  readonly format: "raw" | "qcow2";
}

/** What the appliance VM looks like for one run. */
export interface MachineSpec {
  readonly kernel: string;
  readonly initrd: string;
  readonly memoryMiB: number;
  /** Virtual CPUs; defaults to the host's cores. */
  readonly cpus?: number;
  /** Host port (on 127.0.0.1) forwarded to the guest's sshd. */
  readonly sshPort: number;
  readonly serialLog: string;
  readonly shares: readonly Share[];
  readonly disks: readonly Disk[];
  /** fw_cfg entries: name (below opt/vmdib/) → host file. Keys and config travel this way, no share needed. */
  readonly fwCfg: Readonly<Record<string, string>>;
  readonly pidFile?: string;
  readonly extraKernelArgs?: readonly string[];
  /** A unix socket for QMP (snapshot saving). */
  readonly qmpSocket?: string;
  /** Load a saved VM from this migration URI instead of booting (see snapshot.ts). */
  readonly incoming?: string;
}

/** Facts about the host the VM runs on, gathered by probe.ts. */
export interface HostFacts {
  readonly accel: Accel;
  readonly cpus: number;
}

/**
 * Kernel arguments that make the appliance boot fast and fail loudly (measured in DESIGN.md: 2.6 s → 2.0 s to init).
 */
export const FAST_BOOT_KERNEL_ARGS: readonly string[] = [
  "console=ttyS0",
  // A panic reboots at once, and QEMU's -no-reboot turns that reboot into QEMU exiting: a broken guest ends the run
  // instead of hanging it.
  "panic=-1",
  "quiet",
  // Skip TSC calibration and the timer check: both are slow and pointless under emulation.
  "tsc=reliable",
  "no_timer_check",
  // The crypto self-tests cost a noticeable share of a TCG boot.
  "cryptomgr.notests",
  // Probing absent legacy UARTs and BIOS disk info takes time and finds nothing.
  "8250.nr_uarts=1",
  "edd=off",
  // No address-space randomisation in the throwaway helper VM: TCG finds the code it has translated by virtual
  // address, so a libc mapped somewhere new in every process is translated anew on every exec. Measured in the
  // appliance under TCG (QEMU 7.2): 500 × /bin/true 10.9 s → 2.5 s, 500 × cp 16.7 s → 4.7 s. Builds are exec-bound
  // (dpkg, maintainer scripts, mkinitramfs); the images they make are untouched.
  "norandmaps",
];

/** QEMU's option parser splits on commas; a literal comma in a value is written twice. */
export function qemuOptValue(value: string): string {
  return value.replaceAll(",", ",,");
}

const TAG_RE = /^[A-Za-z0-9_-]{1,31}$/;
const SERIAL_RE = /^[A-Za-z0-9_-]{1,20}$/;

function checkSpec(spec: MachineSpec): void {
  const tags = new Set<string>();
  for (const s of spec.shares) {
    if (!TAG_RE.test(s.tag)) throw new Error(`9p mount tag '${s.tag}' must match ${TAG_RE}`);
    if (tags.has(s.tag)) throw new Error(`9p mount tag '${s.tag}' used twice`);
    tags.add(s.tag);
    if (!s.guestPath.startsWith("/") || /\s/.test(s.guestPath)) {
      throw new Error(`guest mount point '${s.guestPath}' must be absolute and without whitespace`);
    }
  }
  for (const d of spec.disks) {
    if (!SERIAL_RE.test(d.serial)) throw new Error(`disk serial '${d.serial}' must match ${SERIAL_RE}`);
  }
  for (const name of Object.keys(spec.fwCfg)) {
    if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new Error(`fw_cfg name '${name}' has unexpected characters`);
  }
}

/** Accelerator and CPU model: the only part of the argv that depends on the host. */
export function accelArgv(accel: Accel): string[] {
  switch (accel) {
    case "kvm":
      return ["-accel", "kvm", "-cpu", "host"];
    case "hvf":
      return ["-accel", "hvf", "-cpu", "host"];
    case "tcg":
      // thread=multi: one host thread per vCPU, so parallel guest work (compression, dpkg) uses every core.
      // -cpu max: every feature TCG can emulate (x86-64-v2+), which newer userlands expect.
      // -erms,-fsrm: without "fast rep movsb/stosb" the kernel (and glibc) copy and clear memory 8 bytes per rep
      // iteration instead of 1, and TCG pays per iteration: unpacking the appliance's initramfs took 3.7 s instead
      // of 6.0 s (medians of 6 interleaved boots on a loaded 2-core host), the kernel reached init at 8.4 s vs 12.2 s.
      return ["-accel", "tcg,thread=multi", "-cpu", "max,-erms,-fsrm"];
  }
}

/** The guest's kernel command line. */
export function kernelCmdline(spec: Pick<MachineSpec, "extraKernelArgs">): string {
  return [...FAST_BOOT_KERNEL_ARGS, ...(spec.extraKernelArgs ?? [])].join(" ");
}

/**
 * The per-run config guest/init reads from fw_cfg opt/vmdib/config: "key=value" lines, parsed, never sourced.
 * `mount=TAG TARGET ro|rw` per share.
 */
export function guestConfigText(
  spec: Pick<MachineSpec, "shares">,
  extra: Readonly<Record<string, string>> = {},
): string {
  const lines = spec.shares.map((s) => `mount=${s.tag} ${s.guestPath} ${s.readonly ? "ro" : "rw"}`);
  for (const [k, v] of Object.entries(extra)) {
    if (!/^[a-z_]+$/.test(k) || /[\n\r]/.test(v)) throw new Error(`bad guest config entry ${k}`);
    lines.push(`${k}=${v}`);
  }
  return `${lines.join("\n")}\n`;
}

/**
 * What every VM vmdib starts has in common (the appliance, and images under `vmdib boot`/`vmdib test`): no host
 * configuration, no default devices, no window, q35, the accelerator, CPUs, memory, and a reboot ends QEMU.
 */
export function machineArgv(host: Pick<HostFacts, "accel">, cpus: number, memoryMiB: number): string[] {
  return [
    // Ignore /etc/qemu and friends: the VM must not depend on host configuration.
    "-no-user-config",
    // No default devices (VGA, floppy, parallel, default serial/monitor on stdio): only what the caller adds exists.
    "-nodefaults",
    // No window, and unlike -nographic no implicit serial/monitor on stdio.
    "-display",
    "none",
    // q35: modern PCIe machine, with pflash for OVMF. (`microvm` would boot faster but hung in 2 of 6 TCG boots.)
    "-machine",
    "q35",
    ...accelArgv(host.accel),
    "-smp",
    String(cpus),
    "-m",
    String(memoryMiB),
    // A reboot (which is what kernel panic=-1 does) ends QEMU instead of starting the guest again and again.
    "-no-reboot",
  ];
}

/** The appliance VM's argv (without the QEMU binary). */
export function qemuArgv(spec: MachineSpec, host: HostFacts): string[] {
  checkSpec(spec);
  const argv: string[] = [
    ...machineArgv(host, spec.cpus ?? host.cpus, spec.memoryMiB),
    "-kernel",
    spec.kernel,
    "-initrd",
    spec.initrd,
    "-append",
    kernelCmdline(spec),
    // The serial console goes to a file: the guest's own account of a failed boot, shown in our errors.
    "-chardev",
    `file,id=serial0,path=${qemuOptValue(spec.serialLog)}`,
    "-serial",
    "chardev:serial0",
    // Entropy from the host: without it getrandom() can block for seconds early in boot, and sshd needs it.
    "-device",
    "virtio-rng-pci",
    // A VM generation ID (a fresh random one each time QEMU starts, including every restore of a snapshot): the
    // guest kernel reseeds its random number generator when it changes, so copies of one snapshot do not share
    // random numbers (and with them SSH session keys).
    "-device",
    "vmgenid,guid=auto",
    // User-mode networking needs no privileges. The forward binds 127.0.0.1 only: nobody else can reach the guest.
    "-netdev",
    `user,id=net0,hostfwd=tcp:127.0.0.1:${spec.sshPort}-:22`,
    "-device",
    "virtio-net-pci,netdev=net0",
    // The lifeline: a virtio-serial port backed by QEMU's stdin/stdout, which the controller holds as pipes.
    // The guest announces readiness on it and powers off when it reads EOF, i.e. when the controller closes
    // its end or dies in any way (even SIGKILL). signal=off: a ^C on QEMU's stdin is data, never a QEMU exit.
    "-device",
    "virtio-serial-pci,id=vserial0",
    "-chardev",
    "stdio,id=lifeline,signal=off",
    "-device",
    `virtserialport,bus=vserial0.0,chardev=lifeline,name=${LIFELINE_PORT}`,
  ];

  spec.shares.forEach((s, i) => {
    argv.push(
      // security_model=none: files are created as the host user running QEMU (no root needed, and the results
      // are plain files the user owns); a chown the guest asks for fails (EPERM) unless QEMU runs as root.
      // readonly=on for element directories: the guest cannot change the user's elements.
      "-fsdev",
      `local,id=fs${i},path=${qemuOptValue(s.hostPath)},security_model=none${s.readonly ? ",readonly=on" : ""}`,
      "-device",
      `virtio-9p-pci,fsdev=fs${i},mount_tag=${s.tag}`,
    );
  });

  spec.disks.forEach((d, i) => {
    argv.push(
      // cache=unsafe: scratch disks are thrown away if the run dies, so skipping flushes is free speed.
      // discard=unmap: the guest's TRIM/fstrim keeps the host file sparse.
      "-drive",
      `file=${qemuOptValue(d.path)},if=none,id=disk${i},format=${d.format},cache=unsafe,discard=unmap`,
      // serial=: the guest finds the disk by this label, never by enumeration order.
      "-device",
      `virtio-blk-pci,drive=disk${i},serial=${d.serial}`,
    );
  });

  for (const [name, file] of Object.entries(spec.fwCfg)) {
    // fw_cfg: small files handed to the guest firmware interface; the guest reads them from sysfs.
    argv.push("-fw_cfg", `name=${FW_CFG_PREFIX}${name},file=${qemuOptValue(file)}`);
  }

  if (spec.qmpSocket) {
    // QMP on a socket inside the 0700 run directory: the controller pauses and saves the VM through it.
    // wait=off: QEMU runs the guest without waiting for the controller to connect.
    argv.push("-qmp", `unix:${qemuOptValue(spec.qmpSocket)},server=on,wait=off`);
  }
  // The saved guest's RAM and device state instead of a boot; the device set above must equal the saved one's.
  if (spec.incoming) argv.push("-incoming", spec.incoming);
  if (spec.pidFile) argv.push("-pidfile", spec.pidFile);
  return argv;
}

/** The marker the probe looks for: the kernel's first line on the console proves the accelerator runs guest code. */
export const PROBE_MARKER = "Linux version";

/**
 * The accelerator probe's argv: the appliance kernel with no initramfs, console on stdio. It prints its banner,
 * panics for want of a root filesystem, and panic=-1 + -no-reboot end QEMU. A broken accelerator hangs silently.
 */
export function probeArgv(kernel: string, accel: Accel): string[] {
  return [
    "-no-user-config",
    "-nodefaults",
    "-display",
    "none",
    "-machine",
    "q35",
    ...accelArgv(accel),
    "-smp",
    "1",
    "-m",
    "256",
    "-no-reboot",
    "-kernel",
    kernel,
    "-append",
    "console=ttyS0 panic=-1 tsc=reliable no_timer_check cryptomgr.notests 8250.nr_uarts=1 edd=off",
    "-serial",
    "stdio",
  ];
}
