// Tests what guest/dib gives DIB's own (upstream) elements, on the host and without root: the Debian defaults
// run-phase exports (lib/debian-defaults) as upstream debian-minimal reads them, DIB's lib functions sourced the way
// upstream element scripts source them, and the guest's debootstrap wrapper's choice between the host's first stage
// and the real debootstrap. Upstream scripts come from Debian's python3-diskimage-builder when it is installed.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { GUEST_DIR } from "../../src/paths.js";

const DIB = join(GUEST_DIR, "dib");
const RUN_PHASE = join(DIB, "run-phase");
const UPSTREAM = "/usr/lib/python3/dist-packages/diskimage_builder/elements";

function tempDir(t: { teardown(fn: () => void): void }, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** `run-phase WORK env` with these exports in WORK/env: the environment hooks see, as NAME -> value. */
function hookEnv(t: { teardown(fn: () => void): void }, env: Record<string, string>): Map<string, string> {
  const work = tempDir(t, "vmdib-uc-");
  const lines = Object.entries({ IMAGE_NAME: `${work}/out/image`, TMP_BUILD_DIR: `${work}/build`, ...env }).map(
    ([k, v]) => `export ${k}='${v}'`,
  );
  writeFileSync(join(work, "env"), `${lines.join("\n")}\n`);
  // The env step prints `declare -x` lines; let bash itself parse them back.
  const script = `source <(bash "$1" "$2" env) && env -0`;
  const r = spawnSync("bash", ["-c", script, "-", RUN_PHASE, work], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`run-phase env failed: ${r.stderr}`);
  return new Map(
    r.stdout
      .split("\0")
      .filter(Boolean)
      .map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)] as [string, string]),
  );
}

t.test(
  "debian-defaults: a Debian build gets a current release, its security suite and the build's mirror",
  async (t) => {
    const env = hookEnv(t, {
      IMAGE_ELEMENT: "base debian-minimal vm",
      DIB_DISTRIBUTION_MIRROR: "http://mirror.test/debian/",
    });
    t.equal(env.get("DIB_RELEASE"), "bookworm", "vmdib's default release, not upstream's 'stable'");
    t.equal(env.get("DIB_DEBIAN_SECURITY_SUBPATH"), "-security");
    t.equal(env.get("DIB_DEBIAN_SECURITY_MIRROR"), "http://mirror.test/debian-security");
    t.notOk(
      env.get("DIB_ENV")?.includes("DIB_RELEASE"),
      "DIB_ENV (the manifests' record) holds the user's settings only",
    );
  },
);

t.test(
  "debian-defaults: the user's settings win; old releases keep their layout; other distros are untouched",
  async (t) => {
    const base = { IMAGE_ELEMENT: "debian-minimal", DIB_DISTRIBUTION_MIRROR: "http://m.test/debian" };
    const security = (extra: Record<string, string>) =>
      hookEnv(t, { ...base, ...extra }).get("DIB_DEBIAN_SECURITY_SUBPATH");
    t.equal(security({ DIB_RELEASE: "trixie" }), "-security");
    t.equal(security({ DIB_RELEASE: "stable" }), "-security");
    t.equal(security({ DIB_RELEASE: "bullseye" }), "", "upstream names bullseye's suite itself");
    t.equal(security({ DIB_RELEASE: "buster" }), "/updates");
    t.equal(security({ DIB_RELEASE: "bookworm", DIB_DEBIAN_SECURITY_SUBPATH: "" }), "", "set but empty is a setting");
    const own = hookEnv(t, { ...base, DIB_RELEASE: "trixie", DIB_DEBIAN_SECURITY_MIRROR: "http://sec.test/" });
    t.equal(own.get("DIB_RELEASE"), "trixie");
    t.equal(own.get("DIB_DEBIAN_SECURITY_MIRROR"), "http://sec.test/");
    t.notOk(
      hookEnv(t, { ...base, DIB_DISTRIBUTION_MIRROR: "http://m.test/mirror" }).has("DIB_DEBIAN_SECURITY_MIRROR"),
      "no guess for a mirror not laid out like Debian's",
    );
    const ubuntu = hookEnv(t, { IMAGE_ELEMENT: "ubuntu-minimal vm", DIB_DISTRIBUTION_MIRROR: "http://m.test/ubuntu" });
    t.notOk(ubuntu.has("DIB_RELEASE"));
    t.notOk(ubuntu.has("DIB_DEBIAN_SECURITY_SUBPATH"));
  },
);

t.test("upstream debian-minimal's environment.d writes apt sources that exist for bookworm", async (t) => {
  const envFile = join(UPSTREAM, "debian-minimal", "environment.d", "10-debian-minimal.bash");
  if (!existsSync(envFile)) {
    t.pass("python3-diskimage-builder is not installed: skipped");
    return;
  }
  const work = tempDir(t, "vmdib-uc-");
  writeFileSync(
    join(work, "env"),
    `export IMAGE_ELEMENT='base debian-minimal vm'\nexport IMAGE_NAME='${work}/image'\nexport TMP_BUILD_DIR='${work}/b'\n` +
      "export DIB_DISTRIBUTION_MIRROR='http://mirror.test/debian'\n",
  );
  // As dib-run-parts does it: the hooks' environment, then environment.d under set -u.
  const script = `source <(bash "$1" "$2" env) && set -u && source "$3" && printf '%s\\n' "$DIB_APT_SOURCES_CONF"`;
  const r = spawnSync("bash", ["-c", script, "-", RUN_PHASE, work, envFile], { encoding: "utf8" });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^default:deb http:\/\/mirror\.test\/debian bookworm main$/m);
  t.match(r.stdout, /^security:deb http:\/\/mirror\.test\/debian-security bookworm-security main$/m);
  t.notMatch(r.stdout, /\/updates/, "no pre-bullseye security suite");
});

t.test("img-functions: select_boot_kernel_initrd where upstream uses it, with and without _LIB", async (t) => {
  const root = tempDir(t, "vmdib-uc-root-");
  mkdirSync(join(root, "boot"));
  mkdirSync(join(root, "etc"));
  writeFileSync(join(root, "etc", "debian_version"), "12.0\n");
  for (const f of [
    "vmlinuz-6.1.0-9-amd64",
    "vmlinuz-6.1.0-10-amd64",
    "initrd.img-6.1.0-9-amd64",
    "initrd.img-6.1.0-10-amd64",
  ])
    writeFileSync(join(root, "boot", f), "");
  const select = `set -eu -o pipefail; source "$1"; select_boot_kernel_initrd "$2"; echo "$KERNEL:$RAMDISK"`;
  const expected = "vmlinuz-6.1.0-10-amd64:initrd.img-6.1.0-10-amd64\n";
  const lib = join(DIB, "lib");
  // select-boot-kernel-initrd copies img-functions alone into the image and sources it there: no _LIB.
  const alone = spawnSync("env", ["-u", "_LIB", "bash", "-c", select, "-", join(lib, "img-functions"), root], {
    encoding: "utf8",
  });
  t.equal(alone.status, 0, alone.stderr);
  t.equal(alone.stdout, expected, "newest kernel by version, not by name");
  // cleanup-kernel-initrd and baremetal source it through _LIB, sometimes after common-functions.
  const twice = `source "$_LIB/common-functions"; source "$_LIB/common-functions"; ${select}`;
  const viaLib = spawnSync("bash", ["-c", twice, "-", join(lib, "img-functions"), root], {
    encoding: "utf8",
    env: { ...process.env, _LIB: lib },
  });
  t.equal(viaLib.status, 0, viaLib.stderr);
  t.equal(viaLib.stdout, expected, "common-functions may be sourced more than once");
});

t.test("upstream baremetal cleanup.d runs unchanged with run-phase's environment and sudo", async (t) => {
  const script = join(UPSTREAM, "baremetal", "cleanup.d", "99-extract-kernel-and-ramdisk");
  if (!existsSync(script)) {
    t.pass("python3-diskimage-builder is not installed: skipped");
    return;
  }
  const work = tempDir(t, "vmdib-uc-");
  const root = join(work, "root");
  mkdirSync(join(root, "boot"), { recursive: true });
  mkdirSync(join(root, "etc"));
  writeFileSync(join(root, "etc", "debian_version"), "12.0\n");
  writeFileSync(join(root, "boot", "vmlinuz-6.1.0-10-amd64"), "kernel");
  writeFileSync(join(root, "boot", "initrd.img-6.1.0-10-amd64"), "initrd");
  writeFileSync(
    join(work, "env"),
    `export IMAGE_ELEMENT='baremetal'\nexport IMAGE_NAME='${work}/out'\nexport TMP_BUILD_DIR='${work}/b'\n`,
  );
  // The hooks' environment from run-phase (its _LIB, PATH with the sudo passthrough), then the upstream script.
  const r = spawnSync(
    "bash",
    ["-c", `source <(bash "$1" "$2" env) && TARGET_ROOT="$4" "$3"`, "-", RUN_PHASE, work, script, root],
    {
      encoding: "utf8",
    },
  );
  t.equal(r.status, 0, r.stderr + r.stdout);
  t.equal(readFileSync(join(work, "out.vmlinuz"), "utf8"), "kernel");
  t.equal(readFileSync(join(work, "out.initrd"), "utf8"), "initrd");
});

t.test("debootstrap wrapper: only a call with the host stage's exact inputs skips the real first stage", async (t) => {
  const work = tempDir(t, "vmdib-uc-");
  // A stand-in for the real debootstrap, so the test needs neither root nor a mirror.
  const fake = join(work, "real-debootstrap");
  writeFileSync(fake, '#!/bin/bash\necho "REAL $*"\n', { mode: 0o755 });
  const wrapper = join(DIB, "bin", "debootstrap");
  const stage = join(work, "stage1.tar");
  const inputs = "http://m.test/debian|bookworm|amd64|main|";
  const call = (args: string[], env: Record<string, string> = {}) =>
    spawnSync("bash", [wrapper, ...args], {
      encoding: "utf8",
      env: {
        ...process.env,
        VMDIB_REAL_DEBOOTSTRAP: fake,
        VMDIB_DEBOOTSTRAP_STAGE1: stage,
        VMDIB_DEBOOTSTRAP_STAGE1_INPUTS: inputs,
        ...env,
      },
    });
  // Upstream 08-debootstrap's call, word for word, with a mirror the stage was not made for.
  const upstreamArgs = (mirror: string) => [
    "--verbose",
    "--variant=minbase",
    "--components=main",
    "--arch=amd64",
    "bookworm",
    `${work}/target`,
    mirror,
  ];
  const other = call(upstreamArgs("http://other.test/debian"));
  t.equal(other.stdout.trim(), `REAL ${upstreamArgs("http://other.test/debian").join(" ")}`);
  t.match(other.stderr, /first stage is for 'http:\/\/m\.test\/debian\|bookworm/);
  const missing = call(upstreamArgs("http://m.test/debian/"));
  t.match(missing.stdout, /^REAL /, "inputs match, but there is no stage file: the real debootstrap");
  t.match(missing.stderr, /missing/);
  for (const args of [
    ["--foreign", ...upstreamArgs("http://m.test/debian")],
    ["--keyring=/k.gpg", ...upstreamArgs("http://m.test/debian")],
    [...upstreamArgs("http://m.test/debian"), "/usr/share/debootstrap/scripts/sid"],
    ["--second-stage"],
  ]) {
    const r = call(args);
    t.equal(r.stdout.trim(), `REAL ${args.join(" ")}`, args.join(" "));
    t.equal(r.stderr, "", "no message: these never use the host's stage");
  }
  const extra = call(["--include=vim", ...upstreamArgs("http://m.test/debian")]);
  t.match(extra.stdout, /^REAL --include=vim/, "extra options not in DIB_DEBOOTSTRAP_EXTRA_ARGS");
  const noStage = call(upstreamArgs("http://m.test/debian"), { VMDIB_DEBOOTSTRAP_STAGE1: "" });
  t.match(noStage.stdout, /^REAL /);
  t.equal(noStage.stderr, "");
});
