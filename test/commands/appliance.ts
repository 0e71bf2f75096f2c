// Tests src/commands/appliance.ts without network or QEMU: usage errors, `info` on empty and populated caches, and the
// progress lines the CLI prints for library events.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import t from "tap";
import { formatEvent, run } from "../../src/commands/appliance.js";
import { UsageError } from "../../src/errors.js";

function ctx(args: string[], env: NodeJS.ProcessEnv) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = "";
  stdout.on("data", (d: Buffer) => {
    out += d.toString();
  });
  return {
    c: { args, env, cwd: "/", stdin: new PassThrough(), stdout, stderr, signal: new AbortController().signal },
    out: () => out,
  };
}

t.test("usage: no subcommand prints help (exit 2), unknown ones are usage errors", async (t) => {
  const x = ctx([], {});
  t.equal(await run(x.c), 2);
  t.match(x.out(), /vmdib appliance build/);
  await t.rejects(run(ctx(["frobnicate"], {}).c), UsageError);
  await t.rejects(run(ctx(["build", "--bogus"], {}).c));
});

t.test("info: empty cache, then one appliance with --verbose", async (t) => {
  const cache = mkdtempSync(join(tmpdir(), "vmdib-info-"));
  t.teardown(() => rmSync(cache, { recursive: true, force: true }));
  const empty = ctx(["info"], { VMDIB_CACHE_DIR: cache });
  t.equal(await run(empty.c), 0);
  t.match(empty.out(), /no cached appliance/);
  const dir = join(cache, "appliance", "abc");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "manifest.json"), "{}");
  const x = ctx(["info", "--verbose"], { VMDIB_CACHE_DIR: cache });
  t.equal(await run(x.c), 0);
  t.match(x.out(), /abc\s+damaged/);
});

t.test("formatEvent: one line per meaningful event, small downloads summarised", async (t) => {
  t.match(formatEvent({ type: "cache-hit", key: "k", dir: "/d" }) ?? "", /reusing cached appliance k/);
  t.match(
    formatEvent({ type: "downloads", count: 3, bytes: 5e6, cached: 7 }) ?? "",
    /downloading 3 packages \(5.0 MB\); 7/,
  );
  t.equal(formatEvent({ type: "download-done", name: "tiny", bytes: 10, ms: 1 }), undefined);
  t.match(formatEvent({ type: "step", message: "x", ms: 1500 }) ?? "", /^x \(1.5 s\)$/);
});
