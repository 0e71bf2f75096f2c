// Tests the pure parts of `vmdib boot`/`vmdib test` without QEMU: imageBootArgv (src/vm/image-boot.ts), the format,
// firmware and console parsers, the checks, and the option parsing of src/commands/boot.ts and test-image.ts.
import t from "tap";
import { parseBootArgs } from "../src/commands/boot.js";
import { formatReport, parseTestArgs } from "../src/commands/test-image.js";
import { UsageError } from "../src/errors.js";
import {
  checkConsoleArgs,
  checkRootByLabel,
  consoleText,
  diagnoseConsole,
  findLoginPrompt,
  formatFromExtension,
  type ImageBootSpec,
  type ImageTestReport,
  imageBootArgv,
  kernelCmdlineFromConsole,
  parseQemuImgInfo,
  pickOvmf,
  sshFailureText,
  sshFingerprint,
} from "../src/vm/image-boot.js";

const SPEC: ImageBootSpec = {
  image: "/home/u/out/debian.qcow2",
  format: "qcow2",
  memoryMiB: 1024,
  snapshot: true,
  console: "controller",
  serialLog: "/tmp/run/serial.log",
  sshPort: 40022,
};
const TCG = { accel: "tcg" as const, cpus: 2 };

/** The value after each occurrence of `flag`. */
function values(argv: readonly string[], flag: string): string[] {
  return argv.flatMap((a, i) => (a === flag && argv[i + 1] !== undefined ? [argv[i + 1] as string] : []));
}

t.test("imageBootArgv: a headless test boot", async (t) => {
  const argv = imageBootArgv(SPEC, TCG);
  t.same(values(argv, "-machine"), ["q35"]);
  t.same(values(argv, "-accel"), ["tcg,thread=multi"]);
  t.same(values(argv, "-m"), ["1024"]);
  t.same(values(argv, "-smp"), ["2"], "host cores by default");
  t.ok(argv.includes("-snapshot"), "test boots never write the image");
  t.ok(argv.includes("-no-reboot"));
  t.ok(argv.includes("-nodefaults"));
  t.same(values(argv, "-drive"), ["file=/home/u/out/debian.qcow2,if=none,id=disk0,format=qcow2,cache=unsafe"]);
  t.ok(values(argv, "-device").includes("virtio-blk-pci,drive=disk0,bootindex=1"));
  t.same(values(argv, "-chardev"), ["stdio,id=con0,signal=off,logfile=/tmp/run/serial.log"]);
  t.same(values(argv, "-serial"), ["chardev:con0"]);
  t.same(values(argv, "-mon"), [], "no monitor on the controller's pipe");
  t.same(values(argv, "-netdev"), ["user,id=net0,hostfwd=tcp:127.0.0.1:40022-:22"]);
  t.ok(values(argv, "-device").includes("virtio-net-pci,netdev=net0,romfile="), "no network boot ROM");
  t.same(values(argv, "-boot"), ["strict=on,reboot-timeout=1000"], "an unbootable image ends QEMU");
  t.notOk(
    argv.some((a) => a.startsWith("if=pflash")),
    "BIOS unless asked",
  );
  t.notOk(argv.includes("-kernel"));
});

t.test("imageBootArgv: the terminal console, persistent writes, explicit cpus, KVM", async (t) => {
  const argv = imageBootArgv(
    { ...SPEC, console: "terminal", snapshot: false, cpus: 1, format: "raw" },
    {
      accel: "kvm",
      cpus: 8,
    },
  );
  t.same(values(argv, "-chardev"), ["stdio,id=con0,mux=on,signal=off,logfile=/tmp/run/serial.log"]);
  t.same(values(argv, "-mon"), ["chardev=con0,mode=readline"], "Ctrl-A escapes need the muxed monitor");
  t.notOk(argv.includes("-snapshot"));
  t.same(values(argv, "-drive"), ["file=/home/u/out/debian.qcow2,if=none,id=disk0,format=raw,discard=unmap"]);
  t.same(values(argv, "-smp"), ["1"]);
  t.same(values(argv, "-accel"), ["kvm"]);
  t.same(values(argv, "-cpu"), ["host"]);
});

t.test("imageBootArgv: UEFI, direct kernel, commas in paths, pid file", async (t) => {
  const argv = imageBootArgv(
    {
      ...SPEC,
      image: "/data/a,b.qcow2",
      uefi: { code: "/usr/share/OVMF/OVMF_CODE_4M.fd", vars: "/tmp/run/OVMF_VARS_4M.fd" },
      direct: { kernel: "/k", initrd: "/i", append: "console=ttyS0" },
      pidFile: "/tmp/run/qemu.pid",
    },
    TCG,
  );
  t.same(values(argv, "-drive"), [
    "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
    "if=pflash,format=raw,unit=1,file=/tmp/run/OVMF_VARS_4M.fd",
    "file=/data/a,,b.qcow2,if=none,id=disk0,format=qcow2,cache=unsafe",
  ]);
  t.same(values(argv, "-boot"), [], "SeaBIOS options only without UEFI");
  t.same(values(argv, "-kernel"), ["/k"]);
  t.same(values(argv, "-initrd"), ["/i"]);
  t.same(values(argv, "-append"), ["console=ttyS0"]);
  t.same(values(argv, "-pidfile"), ["/tmp/run/qemu.pid"]);
});

t.test("formats by name and by qemu-img", async (t) => {
  t.equal(formatFromExtension("out/debian.qcow2"), "qcow2");
  t.equal(formatFromExtension("out/debian.RAW"), "raw");
  t.equal(formatFromExtension("x.vhd"), "vpc", "QEMU calls vhd vpc");
  t.equal(formatFromExtension("x.vmdk"), "vmdk");
  t.equal(formatFromExtension("x.vdi"), "vdi");
  t.equal(formatFromExtension("x.img"), undefined, ".img says nothing: ask qemu-img");
  t.equal(formatFromExtension("x"), undefined);
  t.equal(parseQemuImgInfo('{"format": "qcow2", "virtual-size": 1}'), "qcow2");
  t.equal(parseQemuImgInfo('{"format": "raw"}'), "raw");
  t.equal(parseQemuImgInfo('{"format": "luks"}'), undefined);
  t.throws(() => parseQemuImgInfo("not json"));
});

t.test("pickOvmf prefers 4M non-secure-boot pairs and needs both halves", async (t) => {
  const debian = [
    "OVMF_CODE.fd",
    "OVMF_CODE.secboot.fd",
    "OVMF_CODE_4M.fd",
    "OVMF_CODE_4M.secboot.fd",
    "OVMF_VARS.fd",
    "OVMF_VARS_4M.fd",
    "OVMF_VARS_4M.ms.fd",
  ];
  t.same(pickOvmf(new Map([["/usr/share/OVMF", debian]])), {
    code: "/usr/share/OVMF/OVMF_CODE_4M.fd",
    vars: "/usr/share/OVMF/OVMF_VARS_4M.fd",
  });
  t.same(pickOvmf(new Map([["/o", ["OVMF_CODE_4M.fd", "OVMF_CODE.fd", "OVMF_VARS.fd"]]])), {
    code: "/o/OVMF_CODE.fd",
    vars: "/o/OVMF_VARS.fd",
  });
  t.same(pickOvmf(new Map([["/brew", ["edk2-x86_64-code.fd", "edk2-i386-vars.fd"]]])), {
    code: "/brew/edk2-x86_64-code.fd",
    vars: "/brew/edk2-i386-vars.fd",
  });
  t.equal(pickOvmf(new Map([["/o", ["OVMF_CODE_4M.secboot.fd"]]])), undefined);
  t.equal(pickOvmf(new Map()), undefined);
});

t.test("console parsing: login prompt and kernel command line", async (t) => {
  const boot = [
    "\x1b[2J\x1b[01;01HBooting `Debian GNU/Linux'\r",
    "[    0.000000] Linux version 6.1.0-28-amd64",
    "[    0.000000] Command line: BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=LABEL=cloudimg-rootfs ro console=tty0 console=ttyS0,115200 no_timer_check\r",
    "[  OK  ] Started \x1b[0;1;39mserial-getty@ttyS0.service\x1b[0m - Serial Getty on ttyS0.",
    "         Starting systemd-logind.service - User Login Management...",
    "",
    "Debian GNU/Linux 12 debian ttyS0",
    "",
    "debian login: ",
  ].join("\n");
  t.equal(findLoginPrompt(boot), "debian login:");
  t.equal(findLoginPrompt("\r\nlogin: "), "login:");
  t.equal(findLoginPrompt("Starting systemd-logind.service - User Login Management..."), undefined);
  t.equal(findLoginPrompt("[  5.1] systemd-logind[200]: New seat seat0."), undefined);
  t.equal(findLoginPrompt("Last login: Sun Nov 29"), undefined, "only a prompt at the end of its line counts");
  t.equal(findLoginPrompt(""), undefined);
  t.equal(
    kernelCmdlineFromConsole(boot),
    "BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=LABEL=cloudimg-rootfs ro console=tty0 console=ttyS0,115200 no_timer_check",
  );
  t.equal(
    kernelCmdlineFromConsole("[    0.061000] Kernel command line: root=/dev/vda1 quiet\n"),
    "root=/dev/vda1 quiet",
  );
  t.equal(kernelCmdlineFromConsole("no kernel here"), undefined);
  t.equal(consoleText("a\x1b[0;32mb\x1b[0m\r\nc"), "ab\nc");
});

t.test("check: console arguments", async (t) => {
  t.equal(checkConsoleArgs("root=LABEL=r console=tty0 console=ttyS0,115200", "k").status, "pass");
  t.equal(checkConsoleArgs("root=LABEL=r console=ttyS0", "k").status, "pass");
  const tty0 = checkConsoleArgs("root=LABEL=r console=tty0", "k");
  t.equal(tty0.status, "fail");
  t.match(tty0.detail, /console=tty0 but no console=ttyS0/);
  t.equal(checkConsoleArgs("root=LABEL=r console=ttyS01", "k").status, "fail");
  t.match(checkConsoleArgs(undefined, "k").detail, /quiet/);
});

t.test("check: root by label", async (t) => {
  t.equal(checkRootByLabel("ro root=LABEL=cloudimg-rootfs", "k").status, "pass");
  const loop = checkRootByLabel("BOOT_IMAGE=/vmlinuz root=/dev/loop0p1 ro", "k");
  t.equal(loop.status, "fail");
  t.match(loop.detail, /GRUB_DEVICE=LABEL/);
  t.equal(checkRootByLabel("root=UUID=1234 ro", "k").status, "fail");
  t.equal(checkRootByLabel("root=/dev/vda1", "k").status, "fail");
  t.equal(checkRootByLabel("ro quiet", "k").status, "fail");
  t.equal(checkRootByLabel("root=/dev/loop0p1 root=LABEL=r", "k").status, "pass", "the last root= wins");
  t.equal(checkRootByLabel(undefined, "k").status, "fail");
  const mounted = checkRootByLabel("root=LABEL=r", "ssh", { source: "/dev/vda1", label: "r" });
  t.equal(mounted.status, "pass");
  t.match(mounted.detail, /\/dev\/vda1 \(r\)/);
  t.equal(checkRootByLabel("root=LABEL=r", "ssh", { source: "/dev/vda2", label: "other" }).status, "fail");
});

t.test("sshFingerprint is OpenSSH's SHA256 form", async (t) => {
  t.equal(sshFingerprint(Buffer.from("abc")), "SHA256:ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0");
});

t.test("vmdib boot options", async (t) => {
  const o = parseBootArgs(["--uefi", "out/d.qcow2", "--memory=2048", "--accel", "tcg", "--snapshot"], "/home/u");
  t.same(o, {
    uefi: true,
    verbose: false,
    image: "/home/u/out/d.qcow2",
    memoryMiB: 2048,
    accel: "tcg",
    snapshot: true,
  });
  t.throws(() => parseBootArgs([], "/"), UsageError);
  t.throws(() => parseBootArgs(["a.qcow2", "b.qcow2"], "/"), /unexpected argument 'b.qcow2'/);
  t.throws(() => parseBootArgs(["--memory", "lots", "a"], "/"), /positive whole number/);
  t.throws(() => parseBootArgs(["--accel", "xen", "a"], "/"), /unknown accelerator/);
  t.throws(() => parseBootArgs(["--json", "a"], "/"), /unknown option '--json'/);
  t.throws(() => parseBootArgs(["a", "--memory"], "/"), /needs a value/);
});

t.test("vmdib test options", async (t) => {
  const o = parseTestArgs(["img.raw", "--ssh-key", "k/id", "--user", "devuser", "--timeout", "600", "--json"], "/w");
  t.same(o, {
    uefi: false,
    verbose: false,
    image: "/w/img.raw",
    json: true,
    sshKey: "/w/k/id",
    user: "devuser",
    timeoutS: 600,
  });
  t.throws(() => parseTestArgs(["img", "--ssh-key", "k"], "/"), /--ssh-key needs --user/);
  t.same(parseTestArgs(["img", "--user", "u"], "/").user, "u", "a password may come from the environment");
  t.throws(() => parseTestArgs(["img", "--user", "a b", "--ssh-key", "k"], "/"), /not a user name/);
  t.throws(() => parseTestArgs(["img", "--timeout", "0"], "/"), /positive/);
  t.throws(() => parseTestArgs(["img", "--snapshot"], "/"), /unknown option/, "test always snapshots");
});

t.test("formatReport: PASS/FAIL lines, and the console tail only on failure", async (t) => {
  const base: ImageTestReport = {
    image: "/o/d.qcow2",
    format: "qcow2",
    firmware: "bios",
    accel: "tcg",
    accelReason: "r",
    passed: true,
    checks: [
      { id: "login-prompt", title: "reached a login prompt", status: "pass", detail: '"debian login:" after 30 s' },
      { id: "ssh", title: "ssh", status: "skip", detail: "no key" },
    ],
    loginPromptSeconds: 30,
    totalSeconds: 31,
    kernelCmdline: "root=LABEL=r console=ttyS0",
    ssh: null,
    qemuExit: null,
    diagnosis: [],
    serialTail: ["debian login:"],
    serialLogCopy: null,
  };
  const ok = formatReport(base);
  t.match(ok, /PASS {2}reached a login prompt/);
  t.match(ok, /SKIP {2}ssh/);
  t.match(ok, /result: PASS \(1 of 1 checks passed\) in 31 s, login prompt after 30 s/);
  t.notMatch(ok, /serial console/);
  const bad = formatReport({
    ...base,
    passed: false,
    checks: [{ id: "login-prompt", title: "reached a login prompt", status: "fail", detail: "no prompt" }],
    serialTail: ["Kernel panic - not syncing"],
    serialLogCopy: "/c/last.log",
  });
  t.match(bad, /FAIL {2}reached a login prompt/);
  t.match(bad, /result: FAIL \(0 of 1 checks passed\)/);
  t.match(bad, /serial console \(last 1 lines; all of it: \/c\/last.log\):\n {2}\| Kernel panic/);
});

t.test("diagnoseConsole names the usual ways an image fails to boot", async (t) => {
  t.same(diagnoseConsole("[  OK  ] Reached target Multi-User System.\ndebian login: "), []);
  t.match(
    diagnoseConsole("error: no such device: 1234-abcd.\nEntering rescue mode...\ngrub rescue> ")[0],
    /GRUB could not find/,
  );
  t.match(
    diagnoseConsole(
      "Begin: Waiting for root file system ... done\nGave up waiting for root file system device.\nALERT!  LABEL=cloudimg-rootfs does not exist.  Dropping to a shell!\n",
    ),
    /LABEL=cloudimg-rootfs/,
  );
  t.match(
    diagnoseConsole("[ 3.2] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\n")[0],
    /kernel panic: VFS/,
  );
  t.match(diagnoseConsole("You are in emergency mode. After logging in...")[0], /emergency mode/);
  t.same(
    diagnoseConsole("[FAILED] Failed to start \x1b[0;1;39mnetworking.service\x1b[0m - Raise network interfaces.\n"),
    ["systemd units failed: networking.service - Raise network interfaces."],
  );
});

t.test("sshFailureText explains the usual SSH failures", async (t) => {
  t.match(
    sshFailureText(new Error("Timed out while waiting for handshake")),
    /sshd is not running.*dhcp-all-interfaces/,
  );
  t.match(sshFailureText(new Error("All configured authentication methods failed")), /DIB_DEV_USER_AUTHORIZED_KEYS/);
  t.equal(sshFailureText(new Error("connect ECONNREFUSED 127.0.0.1:1")), "connect ECONNREFUSED 127.0.0.1:1");
});
