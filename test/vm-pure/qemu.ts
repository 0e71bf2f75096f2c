// Tests src/vm/qemu.ts: the appliance and probe argv as snapshots, option escaping, and spec validation.
import t from "tap";
import { guestConfigText, type MachineSpec, probeArgv, qemuArgv, qemuOptValue } from "../../src/vm/qemu.js";

const work = { tag: "work", hostPath: "/home/u/out, with comma", guestPath: "/vmdib/work", readonly: false };
const image = { path: "/tmp/vmdib-1000/run-x/image.raw", serial: "vmdib-image", format: "raw" as const };
const spec: MachineSpec = {
  kernel: "/cache/appliance/k/vmlinuz",
  initrd: "/cache/appliance/k/initrd.img",
  memoryMiB: 2048,
  sshPort: 40022,
  serialLog: "/tmp/vmdib-1000/run-x/serial.log",
  shares: [work, { tag: "el0", hostPath: "/home/u/elements", guestPath: "/vmdib/elements/0", readonly: true }],
  disks: [image],
  fwCfg: { config: "/tmp/vmdib-1000/run-x/config", authorized_keys: "/tmp/vmdib-1000/run-x/authorized_keys" },
  pidFile: "/tmp/vmdib-1000/run-x/qemu.pid",
};

t.test("appliance argv snapshot (tcg, 2 cores)", async (t) => {
  t.same(qemuArgv(spec, { accel: "tcg", cpus: 2 }), [
    "-no-user-config",
    "-nodefaults",
    "-display",
    "none",
    "-machine",
    "q35",
    "-accel",
    "tcg,thread=multi",
    "-cpu",
    "max,-erms,-fsrm",
    "-smp",
    "2",
    "-m",
    "2048",
    "-no-reboot",
    "-kernel",
    "/cache/appliance/k/vmlinuz",
    "-initrd",
    "/cache/appliance/k/initrd.img",
    "-append",
    "console=ttyS0 panic=-1 quiet tsc=reliable no_timer_check cryptomgr.notests 8250.nr_uarts=1 edd=off norandmaps",
    "-chardev",
    "file,id=serial0,path=/tmp/vmdib-1000/run-x/serial.log",
    "-serial",
    "chardev:serial0",
    "-device",
    "virtio-rng-pci",
    "-device",
    "vmgenid,guid=auto",
    "-netdev",
    "user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22",
    "-device",
    "virtio-net-pci,netdev=net0",
    "-device",
    "virtio-serial-pci,id=vserial0",
    "-chardev",
    "stdio,id=lifeline,signal=off",
    "-device",
    "virtserialport,bus=vserial0.0,chardev=lifeline,name=vmdib.lifeline",
    "-fsdev",
    "local,id=fs0,path=/home/u/out,, with comma,security_model=none",
    "-device",
    "virtio-9p-pci,fsdev=fs0,mount_tag=work",
    "-fsdev",
    "local,id=fs1,path=/home/u/elements,security_model=none,readonly=on",
    "-device",
    "virtio-9p-pci,fsdev=fs1,mount_tag=el0",
    "-drive",
    "file=/tmp/vmdib-1000/run-x/image.raw,if=none,id=disk0,format=raw,cache=unsafe,discard=unmap",
    "-device",
    "virtio-blk-pci,drive=disk0,serial=vmdib-image",
    "-fw_cfg",
    "name=opt/vmdib/config,file=/tmp/vmdib-1000/run-x/config",
    "-fw_cfg",
    "name=opt/vmdib/authorized_keys,file=/tmp/vmdib-1000/run-x/authorized_keys",
    "-pidfile",
    "/tmp/vmdib-1000/run-x/qemu.pid",
  ]);
});

t.test("accelerators: kvm and hvf use the host CPU; spec.cpus overrides the host's count", async (t) => {
  const kvm = qemuArgv({ ...spec, cpus: 1 }, { accel: "kvm", cpus: 8 });
  t.match(kvm.join(" "), /-accel kvm -cpu host -smp 1 /);
  const hvf = qemuArgv(spec, { accel: "hvf", cpus: 8 });
  t.match(hvf.join(" "), /-accel hvf -cpu host -smp 8 /);
});

t.test("the SSH forward binds 127.0.0.1 only", async (t) => {
  const netdev = qemuArgv(spec, { accel: "tcg", cpus: 2 }).find((a) => a.startsWith("user,"));
  t.match(netdev, /hostfwd=tcp:127\.0\.0\.1:40022-:22$/);
});

t.test("commas in paths are doubled for QEMU's option parser", async (t) => {
  t.equal(qemuOptValue("a,b,,c"), "a,,b,,,,c");
});

t.test("bad tags, serials and mount points are refused", async (t) => {
  const host = { accel: "tcg" as const, cpus: 2 };
  t.throws(() => qemuArgv({ ...spec, shares: [{ ...work, tag: "bad tag" }] }, host), /mount tag/);
  t.throws(() => qemuArgv({ ...spec, shares: [work, work] }, host), /used twice/);
  t.throws(() => qemuArgv({ ...spec, shares: [{ ...work, guestPath: "rel" }] }, host), /absolute/);
  t.throws(() => qemuArgv({ ...spec, disks: [{ ...image, serial: "x".repeat(21) }] }, host), /disk serial/);
});

t.test("guest config lists the shares as mount lines", async (t) => {
  t.equal(
    guestConfigText(spec, { debug: "1" }),
    "mount=work /vmdib/work rw\nmount=el0 /vmdib/elements/0 ro\ndebug=1\n",
  );
  t.throws(() => guestConfigText(spec, { debug: "1\nmount=x / rw" }), /bad guest config/);
});

t.test("probe argv: no initramfs, console on stdio, panic ends QEMU", async (t) => {
  const argv = probeArgv("/k", "kvm");
  t.notOk(argv.includes("-initrd"));
  t.match(argv.join(" "), /-no-reboot/);
  t.match(argv.join(" "), /-serial stdio/);
  t.match(argv[argv.indexOf("-append") + 1], /panic=-1/);
});
