// The product, end to end: as the user running the tests, `vmdib build` makes a Debian qcow2 from vmdib's own
// elements (vm block-device-efi debian-minimal devuser openssh-server dhcp-all-interfaces), and `vmdib test` boots
// it twice — with UEFI (OVMF): login prompt, console arguments, root by label, SSH login as devuser with a key made
// here; and with BIOS (block-device-efi also installs grub for BIOS): the console checks. One build, both firmwares.
import { chmod, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import ssh2 from "ssh2";
import t from "tap";
import { cacheDir, PACKAGE_ROOT } from "../../src/paths.js";

const VMDIB = join(PACKAGE_ROOT, "bin", "vmdib");
const ELEMENTS = ["vm", "block-device-efi", "debian-minimal", "devuser", "openssh-server", "dhcp-all-interfaces"];

// The whole boot-and-check may take this long: a 2-core CI host under software emulation, often shared with other
// builds, is slow and its load varies. A bound on waiting, not a performance assertion.
const PATIENCE = ["--timeout", "900"];

type Report = { checks?: { id: string; status: string }[]; kernelCmdline?: string; firmware?: string };
const statuses = (r: Report) => Object.fromEntries((r.checks ?? []).map((c) => [c.id, c.status]));

t.test("a UEFI + BIOS Debian image with devuser and sshd boots both ways and accepts an SSH login", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-e2e-debian-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // A throwaway key pair: its public half goes into the image (devuser), its private half logs in.
  const keys = ssh2.utils.generateKeyPairSync("ed25519", { comment: "vmdib-e2e" });
  const privateKey = join(dir, "id_ed25519");
  await writeFile(privateKey, keys.private);
  await chmod(privateKey, 0o600);
  await writeFile(`${privateKey}.pub`, `${keys.public}\n`);

  const build = await execa(VMDIB, ["build", "-o", "out/debian", ...ELEMENTS], {
    cwd: dir,
    env: { DIB_DEV_USER_USERNAME: "devuser", DIB_DEV_USER_AUTHORIZED_KEYS: `${privateKey}.pub` },
    reject: false,
    all: true,
  });
  t.equal(build.exitCode, 0, build.all?.split("\n").slice(-40).join("\n"));
  t.match(build.stdout, /wrote \S+\/out\/debian\.qcow2 \(qcow2/);
  t.match(build.stdout, /debootstrap stage one/, "debootstrap's first stage was made on the host");
  t.ok((await readdir(join(dir, "out", "debian.d"))).length > 0, "manifests next to the image, as DIB");
  // The chroot's apt downloads went into the shared cache (through the overlay, as this user's 9p refuses chown).
  const aptCache = await readdir(join(cacheDir(), "image-create", "apt", "debian")).catch(() => []);
  t.ok(
    aptCache.some((f) => /^linux-image-.*\.deb$/.test(f)),
    "the kernel package is in the shared apt cache",
  );

  const uefi = await execa(
    VMDIB,
    ["test", "out/debian.qcow2", "--uefi", "--ssh-key", privateKey, "--user", "devuser", "--json", ...PATIENCE],
    { cwd: dir, reject: false },
  );
  const u = JSON.parse(uefi.stdout || "{}") as Report;
  t.equal(u.firmware, "uefi");
  t.same(
    statuses(u),
    { "login-prompt": "pass", "console-args": "pass", "root-by-label": "pass", ssh: "pass" },
    uefi.stdout + uefi.stderr,
  );
  t.equal(uefi.exitCode, 0);
  t.match(u.kernelCmdline ?? "", /root=LABEL=cloudimg-rootfs/);
  t.notMatch(u.kernelCmdline ?? "", /root=\/dev\/loop/);

  const bios = await execa(VMDIB, ["test", "out/debian.qcow2", "--json", ...PATIENCE], { cwd: dir, reject: false });
  const b = JSON.parse(bios.stdout || "{}") as Report;
  t.equal(b.firmware, "bios");
  t.match(
    statuses(b),
    { "login-prompt": "pass", "console-args": "pass", "root-by-label": "pass" },
    bios.stdout + bios.stderr,
  );
  t.equal(bios.exitCode, 0);
});
