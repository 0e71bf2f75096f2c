// Tests src/vm/appliance/lock.ts: concurrent holders serialise, a dead owner's lock is taken over, waiting aborts.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import t from "tap";
import { withLock } from "../src/lock.js";

function tmp(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), "vmdib-lock-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

t.test("two holders never overlap; the second waits and is told so", async (t) => {
  const lock = join(tmp(t), ".lock");
  const log: string[] = [];
  let waited = 0;
  const job = (name: string) =>
    withLock(
      lock,
      async () => {
        log.push(`${name} start`);
        await sleep(100);
        log.push(`${name} end`);
        return name;
      },
      { pollMs: 20, onWait: () => waited++ },
    );
  t.same(await Promise.all([job("a"), job("b")]), ["a", "b"]);
  t.same(log, ["a start", "a end", "b start", "b end"]);
  t.equal(waited, 1);
  t.notOk(existsSync(lock), "released");
});

t.test("a lock left by a dead process is taken over; an old one too", async (t) => {
  const dir = tmp(t);
  writeFileSync(join(dir, ".dead"), `999999 ${hostname()}\n`);
  t.equal(await withLock(join(dir, ".dead"), async () => "got it", { isAlive: () => false }), "got it");
  writeFileSync(join(dir, ".old"), `1 ${hostname()}\n`);
  t.equal(await withLock(join(dir, ".old"), async () => "old", { isAlive: () => true, staleMs: -1 }), "old");
});

t.test("waiting for a live owner stops when aborted; the holder's error propagates and releases", async (t) => {
  const dir = tmp(t);
  writeFileSync(join(dir, ".held"), `${process.pid} ${hostname()}\n`);
  const ac = new AbortController();
  setTimeout(() => ac.abort(new Error("stop")), 50);
  await t.rejects(
    withLock(join(dir, ".held"), async () => 1, { signal: ac.signal, pollMs: 10 }),
    /stop/,
  );
  await t.rejects(
    withLock(join(dir, ".x"), async () => {
      throw new Error("boom");
    }),
    /boom/,
  );
  t.notOk(existsSync(join(dir, ".x")));
});
