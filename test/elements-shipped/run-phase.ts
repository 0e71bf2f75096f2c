// Tests guest/dib/run-phase's chroot handling on the host, which needs root (mounts, chroot): a tiny root made of
// the host's own binaries goes through init, root, install, packages and cleanup. Skipped for other users; the
// end-to-end tests cover it in the helper VM.
import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { GUEST_DIR } from "../../src/paths.js";

const RUN_PHASE = join(GUEST_DIR, "dib", "run-phase");

// root.d: copy bash, coreutils and their libraries from the host, enough for dib-run-parts in the chroot.
const FAKE_OS = `#!/bin/bash
set -eu -o pipefail
for b in bash sh env ls cat find sort mktemp rm date mkdir touch chmod grep install-packages; do
  p=$(command -v "$b") || continue
  mkdir -p "$TARGET_ROOT$(dirname "$p")"
  cp -L "$p" "$TARGET_ROOT$p"
  for l in $(ldd "$p" 2>/dev/null | grep -o '/[^ ]*'); do
    mkdir -p "$TARGET_ROOT$(dirname "$l")"
    cp -Ln "$l" "$TARGET_ROOT$l"
  done
done
mkdir -p "$TARGET_ROOT"/{etc,tmp,root,usr/local/bin}
[ -e "$TARGET_ROOT/bin" ] || ln -s usr/bin "$TARGET_ROOT/bin"
printf '#!/bin/bash\\necho "installing $*" > /root/packages\\n' > "$TARGET_ROOT/usr/local/bin/install-packages"
chmod 755 "$TARGET_ROOT/usr/local/bin/install-packages"
echo "image's own" > "$TARGET_ROOT/etc/resolv.conf"
`;

const IN_CHROOT = `#!/bin/bash
set -eu -o pipefail
{
  echo "FOO=$FOO HOME=$HOME"
  [ -e /proc/self/status ] && echo proc
  [ -e /dev/null ] && echo dev
  [ -d /sys/class ] && echo sys
  touch /tmp/in_target.d/probe 2>/dev/null && echo hooks-writable || echo hooks-read-only
  cat /etc/resolv.conf
} > /root/report
`;

function mounts(under: string): string[] {
  return readFileSync("/proc/self/mounts", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[1] ?? "")
    .filter((m) => m.startsWith(under));
}

t.test("run-phase: root.d, chroot phases, -p packages and cleanup, leaving no mounts", async (t) => {
  if (process.getuid?.() !== 0) {
    t.pass("needs root (mounts and chroot): skipped");
    return;
  }
  const work = mkdtempSync(join(tmpdir(), "vmdib-rp-"));
  const build = join(work, "build");
  t.teardown(() => {
    spawnSync("bash", [RUN_PHASE, work, "unmount", "--all"]);
    rmSync(work, { recursive: true, force: true });
  });
  for (const [dir, name, body] of [
    ["root.d", "10-fake-os", FAKE_OS],
    ["install.d", "50-report", IN_CHROOT],
    ["cleanup.d", "10-check", '#!/bin/bash\necho "cleanup sees $TARGET_ROOT"\n'],
  ] as const) {
    mkdirSync(join(work, "hooks", dir), { recursive: true });
    writeFileSync(join(work, "hooks", dir, name), body);
    chmodSync(join(work, "hooks", dir, name), 0o755);
  }
  mkdirSync(join(work, "hooks", "environment.d"));
  writeFileSync(join(work, "hooks", "environment.d", "10-foo"), "export FOO=from-environment-d\n");
  writeFileSync(
    join(work, "env"),
    `export IMAGE_ELEMENT=fake\nexport IMAGE_NAME='${work}/out/image'\nexport TMP_BUILD_DIR='${build}'\n`,
  );
  const step = (...args: string[]) => {
    const r = spawnSync("bash", [RUN_PHASE, work, ...args], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    t.equal(r.status, 0, `${args.join(" ")}: ${r.stderr.slice(-2000)}`);
    return r;
  };
  const mnt = join(build, "mnt");

  step("root");
  t.same(mounts(mnt).sort(), [`${mnt}/dev`, `${mnt}/dev/pts`, `${mnt}/proc`, `${mnt}/sys`].sort());
  step("install");
  const report = readFileSync(join(mnt, "root", "report"), "utf8");
  t.match(report, "FOO=from-environment-d HOME=/root");
  t.match(report, /proc\ndev\nsys\nhooks-read-only\n/);
  t.notMatch(report, "image's own", "the build resolves names with the appliance's resolv.conf");
  t.notOk(
    mounts(mnt).some((m) => m.endsWith("in_target.d")),
    "hooks unbound after the phase",
  );
  step("packages", "a,b", "c");
  t.equal(readFileSync(join(mnt, "root", "packages"), "utf8"), "installing a b c\n");

  const cleanup = step("cleanup");
  t.match(cleanup.stdout + cleanup.stderr, `cleanup sees ${mnt}`);
  t.equal(readFileSync(join(mnt, "etc", "resolv.conf"), "utf8"), "image's own\n", "resolv.conf restored");
  t.same(mounts(mnt), [], "no mounts left");
});

t.test("run-phase: a failing chroot hook fails the step with its exit code and unbinds the hooks", async (t) => {
  if (process.getuid?.() !== 0) {
    t.pass("needs root (mounts and chroot): skipped");
    return;
  }
  const work = mkdtempSync(join(tmpdir(), "vmdib-rp-"));
  t.teardown(() => {
    spawnSync("bash", [RUN_PHASE, work, "unmount", "--all"]);
    rmSync(work, { recursive: true, force: true });
  });
  mkdirSync(join(work, "hooks", "root.d"), { recursive: true });
  mkdirSync(join(work, "hooks", "install.d"), { recursive: true });
  writeFileSync(join(work, "hooks", "root.d", "10-fake-os"), FAKE_OS);
  writeFileSync(join(work, "hooks", "install.d", "20-fails"), "#!/bin/bash\nexit 42\n");
  chmodSync(join(work, "hooks", "root.d", "10-fake-os"), 0o755);
  chmodSync(join(work, "hooks", "install.d", "20-fails"), 0o755);
  writeFileSync(
    join(work, "env"),
    `export IMAGE_ELEMENT=fake\nexport IMAGE_NAME='${work}/out/image'\nexport TMP_BUILD_DIR='${work}/build'\n`,
  );
  const run = (step: string) =>
    spawnSync("bash", [RUN_PHASE, work, step], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  t.equal(run("root").status, 0);
  const failed = run("install");
  t.equal(failed.status, 42);
  t.match(failed.stderr, /dib-run-parts \/tmp\/in_target\.d\/install\.d\/20-fails failed with exit code 42/);
  t.match(failed.stderr, /run-phase: step 'install' failed with exit code 42/);
  t.notOk(mounts(join(work, "build", "mnt")).some((m) => m.endsWith("in_target.d")));
  t.equal(run("unmount").status, 0);
  t.same(mounts(join(work, "build", "mnt")), []);
});

// copy-root: a tree whose largest part (usr/lib/modules/6.1/kernel/drivers, half of it) is copied by a second cp -a
// alongside the rest. Directory attributes above it, xattrs, owners, a hard link and a mount point in mnt/ are what a
// split could get wrong.
const COPY_TREE = `set -eu -o pipefail
b=$1
mkdir -p "$b"/usr/lib/modules/6.1/kernel/drivers/net "$b"/usr/lib/x86 "$b"/etc "$b"/boot/efi/EFI "$b"/var/log
head -c 3000000 /dev/zero >"$b"/usr/lib/modules/6.1/kernel/drivers/net/a.ko
head -c 2000000 /dev/zero >"$b"/usr/lib/modules/6.1/kernel/b.ko
head -c 1000000 /dev/zero >"$b"/usr/lib/x86/libc.so
echo root >"$b"/etc/passwd
ln "$b"/etc/passwd "$b"/etc/passwd-
ln -s ../usr/lib "$b"/etc/lib
echo grub >"$b"/boot/efi/EFI/grub
chown 1234:55 "$b"/var/log
chmod 2750 "$b"/var/log
chmod 700 "$b"/usr/lib
chown 7:8 "$b"/usr/lib/modules
python3 -c 'import os, sys
for path, value in zip(sys.argv[1::2], sys.argv[2::2]): os.setxattr(path, "user.vmdib", value.encode())' \\
  "$b"/usr/lib d1 "$b"/usr/lib/modules/6.1/kernel d2 "$b"/usr/lib/modules/6.1/kernel/drivers d3 "$b"/usr/lib/x86/libc.so f1
touch -d '2001-01-01 10:00:00.123456789' "$b"/usr/lib/modules/6.1/kernel/drivers "$b"/usr/lib/modules/6.1/kernel \\
  "$b"/usr/lib/modules/6.1 "$b"/usr/lib "$b"/usr "$b"/etc "$b"
`;
// Everything cp -a keeps but atimes (reading a tree moves them), then every xattr.
const LIST_TREE = `set -eu -o pipefail
cd "$1"
find . -printf '%p %m %u %g %T@ %n %l %s\\n' | sort
python3 -c 'import os
for d, dirs, files in sorted(os.walk(".")):
    for n in sorted(dirs + files):
        p = os.path.join(d, n)
        print(p, sorted((k, os.getxattr(p, k, follow_symlinks=False)) for k in os.listxattr(p, follow_symlinks=False)))'
`;

t.test("run-phase copy-root: two cp -a at once leave what one cp -a leaves; a failing half fails it", async (t) => {
  if (process.getuid?.() !== 0) {
    t.pass("needs root (owners): skipped");
    return;
  }
  const work = mkdtempSync(join(tmpdir(), "vmdib-rp-"));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const sh = (script: string, ...args: string[]) => {
    const r = spawnSync("bash", ["-c", script, "sh", ...args], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`${script.slice(0, 60)}: ${r.stderr}`);
    return r.stdout;
  };
  // One tree, copied for each case (cp -a keeps its times), so that every case starts from the same attributes.
  const template = join(work, "template");
  mkdirSync(template);
  sh(COPY_TREE, template);
  /** A fresh work dir with the tree in built/ and mnt/boot/efi as a block device step leaves it. */
  const fresh = (name: string, extra?: string) => {
    const w = join(work, name);
    const build = join(w, "build");
    mkdirSync(join(build, "built"), { recursive: true });
    mkdirSync(join(build, "mnt", "boot", "efi"), { recursive: true });
    writeFileSync(
      join(w, "env"),
      `export IMAGE_ELEMENT=fake\nexport IMAGE_NAME='${w}/out/image'\nexport TMP_BUILD_DIR='${build}'\n`,
    );
    sh('cp -a "$1/." "$2/"', template, join(build, "built"));
    if (extra) sh(`b=$1\n${extra}`, join(build, "built"));
    return { w, build, built: join(build, "built"), mnt: join(build, "mnt") };
  };
  const copyRoot = (w: string) =>
    spawnSync("bash", [RUN_PHASE, w, "copy-root"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });

  const ref = fresh("ref");
  sh('cp -a "$1/." "$2/"', ref.built, ref.mnt);
  const want = sh(LIST_TREE, ref.mnt);
  const split = fresh("split");
  const r = copyRoot(split.w);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, "copy-root: usr/lib/modules/6.1/kernel/drivers alongside the rest");
  t.equal(sh(LIST_TREE, split.mnt), want, "the same modes, owners, mtimes, links, sizes and xattrs as one cp -a");
  t.same(sh('ls -A "$1"', split.build).split("\n").filter(Boolean), ["mnt"], "built/ and the split removed");

  // A hard link from the subtree to outside it: one cp, which keeps the pair.
  const linked = fresh("linked", 'ln "$b"/usr/lib/modules/6.1/kernel/drivers/net/a.ko "$b"/var/a.ko\n');
  const l = copyRoot(linked.w);
  t.equal(l.status, 0, l.stderr);
  t.notMatch(l.stdout, "alongside", "no split");
  t.equal(
    sh('stat -c %i "$1/var/a.ko" "$1/usr/lib/modules/6.1/kernel/drivers/net/a.ko" | uniq | wc -l', linked.mnt).trim(),
    "1",
    "the hard link pair is one inode",
  );

  // Either half failing (a file where the tree has a directory) fails the step and leaves built/ whole.
  for (const [name, blocker] of [
    ["rest-fails", "etc"],
    ["split-fails", "usr/lib/modules/6.1/kernel/drivers/net"],
  ] as const) {
    const f = fresh(name);
    const before = sh(LIST_TREE, f.built);
    sh('mkdir -p "$(dirname "$1")" && echo x >"$1"', join(f.mnt, blocker));
    const failed = copyRoot(f.w);
    t.not(failed.status, 0, `${name}: the step fails`);
    t.match(failed.stderr, /cannot overwrite non-directory/, name);
    t.equal(sh(LIST_TREE, f.built), before, `${name}: built/ as it was`);
  }
});
