// Tests for src/commands/build.ts: --help/--version, --dry-run [--json], and bad input ending in exit 2.
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Writable } from "node:stream";
import t from "tap";
import { main } from "../../src/cli.js";
import { runQemuImg } from "../../src/commands/build.js";
import { VmdibError } from "../../src/errors.js";
import { PACKAGE_ROOT } from "../../src/paths.js";
import { vmdib } from "../helpers/cli.js";

// A mirror is named so that planning never depends on this machine's apt sources.
const ENV = { DIB_DISTRIBUTION_MIRROR: "http://mirror.example.invalid/debian" };
const TINY = join(PACKAGE_ROOT, "test", "fixtures", "e2e-elements");

t.test("--help is generated from the settings table; --version", async (t) => {
  const help = await vmdib(["build", "--help"]);
  t.equal(help.code, 0);
  t.match(help.stdout, /--image-extra-size SIZE/);
  t.match(help.stdout, /MKFS_OPTS/);
  t.same(await vmdib(["help", "build"]), help, "`vmdib help build` prints the same");
  const version = await vmdib(["--version"]);
  t.match(version.stdout, /^vmdib \d+\.\d+\.\d+/);
});

t.test("--dry-run prints the plan without starting anything", async (t) => {
  const r = await vmdib(["build", "--dry-run", "-o", "out/deb", "vm", "debian-minimal"], ENV);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /Elements:\n {2}base +\S+\/elements\/base/);
  t.match(r.stdout, /block-device-mbr/, "vm without a block-device element gets block-device-mbr");
  t.match(r.stdout, /root +\[appliance\]/);
  t.match(r.stdout, /install +\[chroot\]/);
  t.match(r.stdout, /DIB_DISTRIBUTION_MIRROR="http:\/\/mirror\.example\.invalid\/debian"/);
  t.match(r.stdout, /out\/deb\.qcow2/);
});

t.test("--dry-run --json is one JSON document with the same plan", async (t) => {
  const r = await vmdib(["build", "--dry-run", "--json", "-t", "qcow2,tar", "vm", "debian-minimal"], ENV);
  t.equal(r.code, 0, r.stderr);
  const plan = JSON.parse(r.stdout);
  t.same(
    plan.outputs.map((o: { path: string }) => o.path),
    ["image.qcow2", "image.tar"],
  );
  t.ok(plan.elements.some((e: { name: string }) => e.name === "debian-minimal"));
  t.equal(plan.steps[0].name, "root");
  t.equal(plan.blockDevice.layout.root.label, "cloudimg-rootfs");
});

t.test("-n drops base; --root-label and FS_TYPE reach the layout", async (t) => {
  const r = await vmdib(["build", "--dry-run", "--json", "-n", "--root-label", "myroot", "vm", "debian-minimal"], {
    ...ENV,
    FS_TYPE: "xfs",
  });
  t.equal(r.code, 0, r.stderr);
  const plan = JSON.parse(r.stdout);
  t.notOk(plan.elements.some((e: { name: string }) => e.name === "base"));
  t.equal(plan.blockDevice.layout.root.label, "myroot");
  t.equal(plan.blockDevice.layout.root.fsType, "xfs");
});

t.test("bad input: exit 2, one message with a hint, no stack trace", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-build-test-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, "not-a-dir");
  await writeFile(file, "");
  const cases: [string[], NodeJS.ProcessEnv, RegExp][] = [
    [["no-such-element", "debian-minimal"], {}, /element 'no-such-element' not found/],
    [["vm"], {}, /operating-system/],
    [["-t", "qcow3", "debian-minimal"], {}, /unknown image type 'qcow3'/],
    [["--image-size", "-1", "debian-minimal"], {}, /--image-size/],
    [["--image-size", "0", "debian-minimal"], {}, /--image-size/],
    [["--image-size", "1e9", "debian-minimal"], {}, /--image-size/],
    [["--bogus", "debian-minimal"], {}, /unknown option '--bogus'/],
    [["--accel", "warp", "debian-minimal"], {}, /unknown accelerator 'warp'/],
    [["--break", "after-lunch", "debian-minimal"], {}, /unknown break point 'after-lunch'/],
    [["debian-minimal"], { break: "before-nothing" }, /break: unknown break point 'before-nothing'/],
    [["debian-minimal"], { ELEMENTS_PATH: file }, /not-a-dir/],
    [["vm", "debian-minimal"], { DIB_BLOCK_DEVICE_CONFIG: "file:///nonexistent/bd.yaml" }, /DIB_BLOCK_DEVICE_CONFIG/],
    [["vm", "debian-minimal"], { DIB_BLOCK_DEVICE_CONFIG: "- local_loop: [unclosed" }, /DIB_BLOCK_DEVICE_CONFIG/],
    [[], {}, /no elements given/],
  ];
  for (const [args, env, re] of cases) {
    const r = await vmdib(["build", "--dry-run", ...args], { ...ENV, ...env });
    const what = `${args.join(" ")} ${JSON.stringify(env)}`;
    t.equal(r.code, 2, `${what}: exit 2`);
    t.match(r.stderr, re, what);
    t.match(r.stderr, /hint: /, `${what}: has a hint`);
    t.notMatch(r.stderr, /\n\s+at /, `${what}: no stack trace`);
  }
});

t.test("--debug adds the stack trace", async (t) => {
  const r = await vmdib(["build", "--debug", "--dry-run", "nope"], ENV);
  t.equal(r.code, 2);
  t.match(r.stderr, /\n\s+at /);
});

t.test("the shipped elements resolve", async (t) => {
  const r = await vmdib(["elements", "vm", "debian-minimal"], { ELEMENTS_PATH: join(PACKAGE_ROOT, "elements") });
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /\bbootloader\b/);
});

t.test("an output directory that cannot be written: exit 2 before anything boots", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-build-test-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(join(dir, "file"), "");
  const r = await vmdib(["build", "-n", "-o", join(dir, "file", "img"), "tiny-os"], { ELEMENTS_PATH: TINY }, dir);
  t.equal(r.code, 2);
  t.match(r.stderr, /cannot write to the output directory .*\/file \((ENOTDIR|EEXIST)\)/);
  t.match(r.stderr, /hint: choose an -o in a directory you can write/);
});

t.test("a second build aimed at the same -o waits for the first one's lock", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-build-test-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await mkdir(join(dir, "out"));
  // This test process holds the lock, as a running build would.
  await writeFile(join(dir, "out", "img.vmdib-lock"), `${process.pid} ${hostname()}\n`);
  const stop = new AbortController();
  let err = "";
  const stderr = new Writable({
    write(chunk: Buffer, _enc, done) {
      err += chunk.toString();
      if (err.includes("waiting")) stop.abort(new Error("test: stop waiting"));
      done();
    },
  });
  const sink = new Writable({ write: (_c, _e, done) => done() });
  const env = { ELEMENTS_PATH: TINY };
  const args = ["build", "-n", "-o", "out/img", "tiny-os"];
  const code = await main(args, { env, cwd: dir, stdin: new PassThrough(), stdout: sink, stderr, signal: stop.signal });
  t.match(err, new RegExp(`waiting for another build \\(pid ${process.pid}\\) writing out/img`));
  t.not(code, 0, "stopped while waiting");
  t.ok(existsSync(join(dir, "out", "img.vmdib-lock")), "the owner's lock is left alone");
});

t.test("--break without a terminal: exit 2 before anything boots", async (t) => {
  const r = await vmdib(["build", "-n", "--break", "after-install", "tiny-os"], { ELEMENTS_PATH: TINY });
  t.equal(r.code, 2);
  t.match(r.stderr, /--break after-install opens a shell and needs a terminal/);
});

t.test("a bad build file: exit 2 before anything boots, the message names the entry", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-buildfile-test-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const env = { ...ENV, ELEMENTS_PATH: TINY };
  const cases: [string, RegExp][] = [
    [
      "- imagename: x\n  elements: [tiny-os, nope]\n",
      /^vmdib: error: f\.yaml entry 1 \(line 1, imagename 'x'\): element 'nope' not found/,
    ],
    [
      "- imagename: x\n  elements: [tiny-os]\n  image-size: lots\n",
      /f\.yaml entry 1 .*: 'image-size': 'lots' is not a usable size/,
    ],
    [
      "- imagename: x\n  elements: [tiny-os]\n- imagename: y\n  elemnts: [tiny-os]\n",
      /f\.yaml entry 2 \('y'\), line 4: unknown key 'elemnts'/,
    ],
    ["- imagename: x\n  elements: [tiny-os\n", /f\.yaml:3:1: YAML syntax error/],
    [
      "- imagename: x\n  elements: [tiny-os]\n- imagename: x.qcow2\n  types: [qcow2]\n  elements: [tiny-os]\n",
      /f\.yaml entry 2 \(line 3, imagename 'x\.qcow2'\) and f\.yaml entry 1 .* both write x\.qcow2/,
    ],
    [
      "- imagename: x\n  elements: [tiny-os]\n  image-cache: /tmp/a\n- imagename: y\n  elements: [tiny-os]\n",
      /name different image-cache directories/,
    ],
  ];
  for (const [text, re] of cases) {
    await writeFile(join(dir, "f.yaml"), text);
    const r = await vmdib(["build", "-n", "-f", "f.yaml"], env, dir);
    t.equal(r.code, 2, `${text}: exit 2`);
    t.match(r.stderr, re, text);
    t.match(r.stderr, /hint: /, "a hint");
    t.notOk(existsSync(join(dir, "x.qcow2")), "nothing built");
  }
  const missing = await vmdib(["build", "-f", "nope.yaml"], env, dir);
  t.match(missing.stderr, /cannot read the build file nope\.yaml \(ENOENT\)/);
  const both = await vmdib(["build", "-f", "f.yaml", "tiny-os"], env, dir);
  t.match(both.stderr, /elements on the command line \(tiny-os\) and a build file/);
});

t.test("build file --dry-run: each image's plan, the command line's settings as defaults", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-buildfile-test-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await writeFile(
    join(dir, "f.yaml"),
    "- imagename: out/a\n  elements: [tiny-os]\n  environment: {DIB_ONLY_A: 'yes'}\n- imagename: out/b\n  elements: [tiny-os]\n  types: [tar]\n",
  );
  const r = await vmdib(
    ["build", "-n", "-t", "raw", "-f", "f.yaml", "--dry-run", "--json"],
    { ...ENV, ELEMENTS_PATH: TINY },
    dir,
  );
  t.equal(r.code, 0, r.stderr);
  const [a, b] = JSON.parse(r.stdout).images;
  t.same(
    a.plan.outputs.map((o: { path: string }) => o.path),
    ["out/a.raw"],
    "-t raw for the image naming no types",
  );
  t.same(
    b.plan.outputs.map((o: { path: string }) => o.path),
    ["out/b.tar"],
    "the entry's types win",
  );
  t.equal(a.plan.environment.common.DIB_ONLY_A, "yes");
  t.equal(b.plan.environment.common.DIB_ONLY_A, undefined, "an entry's environment is its own");
  t.notOk(existsSync(join(dir, "out")), "nothing made");
});

t.test("runQemuImg: progress from -p; a failure says qemu-img's reason and the option to check", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-qemu-img-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const raw = join(dir, "disk.raw");
  await writeFile(raw, Buffer.alloc(1024 * 1024));
  const seen: number[] = [];
  await runQemuImg(["convert", "-f", "raw", "-O", "qcow2", raw, join(dir, "disk.qcow2")], undefined, (f) =>
    seen.push(f),
  );
  t.ok(existsSync(join(dir, "disk.qcow2")), "converted");
  t.equal(seen.at(-1), 1, "progress reached 100%");
  const err = await runQemuImg([
    "convert",
    "-f",
    "raw",
    "-O",
    "vmdk",
    "-o",
    "cluster_size=65536",
    raw,
    join(dir, "d.vmdk"),
  ])
    .then(() => undefined)
    .catch((e: unknown) => e);
  t.ok(err instanceof VmdibError, "a VmdibError, not an internal error");
  t.match((err as VmdibError).message, /^qemu-img convert failed: .*cluster_size/, (err as VmdibError).message);
  t.match((err as VmdibError).hint, /--qemu-img-options/);
});
