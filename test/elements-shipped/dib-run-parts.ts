// Tests guest/dib/lib/dib-run-parts on the host: selection, `sort -n` order, environment.d, timing table, failure.
import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { GUEST_DIR } from "../../src/paths.js";

const RUN_PARTS = join(GUEST_DIR, "dib", "lib", "dib-run-parts");

/** A hook tree with the given `<phase>.d` scripts and environment.d files, in a fresh temp dir. */
function hookTree(
  t: { teardown(fn: () => void): void },
  scripts: Record<string, string | { body: string; mode: number }>,
  env: Record<string, string> = {},
): string {
  const root = mkdtempSync(join(tmpdir(), "vmdib-drp-"));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  mkdirSync(join(root, "install.d"));
  mkdirSync(join(root, "environment.d"));
  for (const [name, spec] of Object.entries(scripts)) {
    const { body, mode } = typeof spec === "string" ? { body: spec, mode: 0o755 } : spec;
    const path = join(root, "install.d", name);
    writeFileSync(path, `#!/bin/bash\n${body}\n`);
    chmodSync(path, mode);
  }
  for (const [name, body] of Object.entries(env)) writeFileSync(join(root, "environment.d", name), body);
  return root;
}

function runParts(dir: string, args: string[] = [], env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync("bash", [RUN_PARTS, ...args, join(dir, "install.d")], {
    encoding: "utf8",
    env: { PATH: process.env.PATH, ...env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const echoName = (name: string) => `echo ran ${name}`;

t.test("runs executable, well-named scripts in LANG=C sort -n order", async (t) => {
  const dir = hookTree(t, {
    "10-ten": echoName("10-ten"),
    "2-two": echoName("2-two"),
    "10-abc": echoName("10-abc"),
    "01_under": echoName("01_under"),
    "50-dotted.sh": echoName("dotted"),
    "20-noexec": { body: echoName("noexec"), mode: 0o644 },
    README: { body: "", mode: 0o644 },
  });
  const r = runParts(dir);
  t.equal(r.code, 0, r.stderr);
  t.same(r.stdout.trim().split("\n"), ["ran 01_under", "ran 2-two", "ran 10-abc", "ran 10-ten"]);
});

t.test("--list prints the selected scripts without running them", async (t) => {
  const dir = hookTree(t, { "10-b": "touch ran", "05-a": "touch ran", "x.sh": "" });
  const r = runParts(dir, ["--list"]);
  t.equal(r.code, 0);
  t.same(r.stdout.trim().split("\n"), [join(dir, "install.d", "05-a"), join(dir, "install.d", "10-b")]);
});

t.test("sources environment.d in order under set -u, visible to scripts but not leaking", async (t) => {
  const dir = hookTree(
    t,
    { "10-show": 'echo "$FOO $BAR"' },
    { "20-bar": "export BAR=$FOO-bar", "10-foo": "export FOO=foo" },
  );
  const r = runParts(dir);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout.trim(), "foo foo-bar");
  t.match(r.stderr, /Sourcing environment file .*10-foo[\s\S]*Sourcing environment file .*20-bar/);

  const unset = hookTree(t, { "10-show": "true" }, { "10-bad": "echo $NOT_SET" });
  const bad = runParts(unset);
  t.not(bad.code, 0, "an unset variable in environment.d fails the phase (set -u)");
});

t.test("prints a per-script timing table", async (t) => {
  const dir = hookTree(t, { "10-fast": "true", "20-slow": "sleep 0.3" });
  const r = runParts(dir);
  t.equal(r.code, 0);
  t.match(r.stderr, /PROFILING/);
  t.match(r.stderr, /Target: install\.d/);
  const slow = /dib-run-parts 20-slow\s+(\d+\.\d{3})/.exec(r.stderr);
  t.ok(slow, "20-slow has a row");
  t.ok(Number(slow?.[1]) >= 0.3, `20-slow took at least 0.3 s (${slow?.[1]})`);
  t.match(r.stderr, /dib-run-parts 10-fast\s+\d+\.\d{3}/);
  t.match(r.stderr, /END PROFILING/);
});

t.test("stops at the first failing script, naming it and passing its exit code on", async (t) => {
  const dir = hookTree(t, { "10-ok": echoName("10-ok"), "20-fail": "exit 7", "30-never": echoName("30-never") });
  const r = runParts(dir);
  t.equal(r.code, 7);
  t.equal(r.stdout.trim(), "ran 10-ok");
  t.match(r.stderr, new RegExp(`dib-run-parts ${join(dir, "install.d", "20-fail")} failed with exit code 7`));
  t.match(r.stderr, /20-fail\s+\d+\.\d{3}/, "the timing table still lists what ran");
});

t.test("reports ignored files when DIB_DEBUG_TRACE > 0", async (t) => {
  const dir = hookTree(t, { "10-ok": "true", "20-noexec": { body: "", mode: 0o644 }, "bad.name": "true" });
  const r = runParts(dir, [], { DIB_DEBUG_TRACE: "1" });
  t.equal(r.code, 0);
  t.match(r.stderr, /Ignoring non-executable file: 20-noexec/);
  t.match(r.stderr, /Ignoring non-conforming filename: bad\.name/);
});

t.test("rejects a missing directory", async (t) => {
  const r = spawnSync("bash", [RUN_PARTS, "/nonexistent/install.d"], { encoding: "utf8" });
  t.not(r.status, 0);
  t.match(r.stderr, /must exist and be a directory/);
});
