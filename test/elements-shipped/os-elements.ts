// Tests the OS elements' shell on the host without a VM: debian-minimal's apt sources, ubuntu-minimal's defaults,
// the bootloader's block-device choice, and debootstrap's clear error when the mirror answers nothing.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { BUILTIN_ELEMENTS_DIR } from "../../src/paths.js";

const el = (...parts: string[]) => join(BUILTIN_ELEMENTS_DIR, ...parts);

/** Sources environment.d files under `set -u` (as dib-run-parts does) and prints the named variables. */
function sourceEnv(files: string[], env: Record<string, string>, names: string[]) {
  const script = [
    "set -eu",
    ...files.map((f) => `source '${f}'`),
    ...names.map((n) => `printf '%s=%s\\n' ${n} "\${${n}}"`),
  ].join("\n");
  const r = spawnSync("bash", ["-c", script], {
    encoding: "utf8",
    env: { PATH: process.env.PATH ?? "", ARCH: "amd64", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const DEBIAN_ENV = el("debian-minimal", "environment.d", "10-debian-minimal.bash");

t.test("debian-minimal: bookworm by default, with -updates and -security next to the configured mirror", async (t) => {
  const r = sourceEnv([DEBIAN_ENV], { DIB_DISTRIBUTION_MIRROR: "http://mirror.invalid/debian/" }, [
    "DISTRO_NAME",
    "DIB_RELEASE",
    "DIB_INIT_SYSTEM",
    "DIB_DEBIAN_SECURITY_MIRROR",
    "DIB_APT_SOURCES_CONF",
  ]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, "DISTRO_NAME=debian\nDIB_RELEASE=bookworm\nDIB_INIT_SYSTEM=systemd\n");
  t.match(r.stdout, "DIB_DEBIAN_SECURITY_MIRROR=http://mirror.invalid/debian-security\n");
  t.match(
    r.stdout,
    [
      "DIB_APT_SOURCES_CONF=default:deb http://mirror.invalid/debian/ bookworm main",
      "updates:deb http://mirror.invalid/debian/ bookworm-updates main",
      "security:deb http://mirror.invalid/debian-security bookworm-security main",
    ].join("\n"),
  );
});

t.test("debian-minimal: older and rolling releases, explicit mirrors, components", async (t) => {
  const buster = sourceEnv(
    [DEBIAN_ENV],
    {
      DIB_RELEASE: "buster",
      DIB_DEBIAN_DISTRIBUTION_MIRROR: "http://m.invalid/d",
      DIB_DEBIAN_COMPONENTS: "main,contrib",
    },
    ["DIB_DISTRIBUTION_MIRROR", "DIB_APT_SOURCES_CONF"],
  );
  t.match(buster.stdout, "DIB_DISTRIBUTION_MIRROR=http://m.invalid/d\n");
  t.match(buster.stdout, "security:deb http://m.invalid/d-security buster/updates main contrib");
  const sid = sourceEnv([DEBIAN_ENV], { DIB_RELEASE: "sid", DIB_DISTRIBUTION_MIRROR: "http://m.invalid/debian" }, [
    "DIB_APT_SOURCES_CONF",
  ]);
  t.equal(sid.stdout, "DIB_APT_SOURCES_CONF=default:deb http://m.invalid/debian sid main\n");
  const none = sourceEnv([DEBIAN_ENV], {}, ["DIB_DISTRIBUTION_MIRROR"]);
  t.equal(none.code, 0, "no mirror is not an error while sourcing; root.d reports it");
  const own = sourceEnv([DEBIAN_ENV], { DIB_APT_SOURCES_CONF: "x:deb file:///m bookworm main" }, [
    "DIB_APT_SOURCES_CONF",
  ]);
  t.equal(own.stdout, "DIB_APT_SOURCES_CONF=x:deb file:///m bookworm main\n");
});

t.test("ubuntu-minimal: DIB's variables, no built-in mirror", async (t) => {
  const r = sourceEnv([el("ubuntu-minimal", "environment.d", "10-ubuntu-minimal.bash")], {}, [
    "DISTRO_NAME",
    "DIB_RELEASE",
    "DIB_DISTRIBUTION_MIRROR",
    "DIB_DEBIAN_COMPONENTS",
    "DIB_UBUNTU_KERNEL",
  ]);
  t.equal(r.code, 0, r.stderr);
  t.equal(
    r.stdout,
    "DISTRO_NAME=ubuntu\nDIB_RELEASE=jammy\nDIB_DISTRIBUTION_MIRROR=\nDIB_DEBIAN_COMPONENTS=main,universe\nDIB_UBUNTU_KERNEL=linux-image-generic\n",
  );
});

t.test("block-device-*: DIB_BLOCK_DEVICE for the bootloader, arch gates", async (t) => {
  for (const kind of ["mbr", "gpt", "efi"]) {
    const r = sourceEnv([el(`block-device-${kind}`, "environment.d", "15-block-device.bash")], {}, [
      "DIB_BLOCK_DEVICE",
    ]);
    t.equal(r.stdout, `DIB_BLOCK_DEVICE=${kind}\n`);
  }
  const arm = sourceEnv([el("block-device-mbr", "environment.d", "15-block-device.bash")], { ARCH: "arm64" }, []);
  t.not(arm.code, 0);
  t.match(arm.stdout, /not supported on arm64/);
});

t.test("debootstrap root.d: a mirror that answers nothing, or none, fails with a message and a hint", async (t) => {
  const root = mkdtempSync(join(tmpdir(), "vmdib-root-"));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const run = (env: Record<string, string>) =>
    spawnSync("bash", [el("debootstrap", "root.d", "08-debootstrap")], {
      encoding: "utf8",
      env: {
        PATH: process.env.PATH ?? "",
        TARGET_ROOT: root,
        DISTRO_NAME: "ubuntu",
        DIB_RELEASE: "jammy",
        ARCH: "amd64",
        DIB_IMAGE_CACHE: join(root, "cache"),
        ...env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
  const silent = run({ DIB_DISTRIBUTION_MIRROR: `file://${root}/no-mirror` });
  t.equal(silent.status, 1);
  t.match(silent.stderr, /does not serve release 'jammy' \(no dists\/jammy\/InRelease or Release there\)/);
  t.match(silent.stderr, /Hint: check DIB_DISTRIBUTION_MIRROR and DIB_RELEASE/);
  const none = run({});
  t.equal(none.status, 1);
  t.match(none.stderr, /no mirror: DIB_DISTRIBUTION_MIRROR is not set/);
});
