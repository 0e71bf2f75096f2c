// Lock files (effects): one process does a piece of work (build an appliance, write an output), others wait for it.
// A lock whose owner died (no such pid) or that is implausibly old is taken over, so a killed build never blocks later
// ones.

import { readFile, rm, stat, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";

export interface LockOptions {
  signal?: AbortSignal;
  /** Called once when the lock is held by someone else and we start waiting. */
  onWait?: (owner: string) => void;
  pollMs?: number;
  /** A lock older than this is considered stale whatever its pid says. */
  staleMs?: number;
  /** Is `pid` (on this host) alive? Injected for tests. */
  isAlive?: (pid: number) => boolean;
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM"; // exists, owned by another user
  }
}

/** Run `fn` holding the lock file `path` (created with O_EXCL, removed afterwards). */
export async function withLock<T>(path: string, fn: () => Promise<T>, opts: LockOptions = {}): Promise<T> {
  const isAlive = opts.isAlive ?? pidAlive;
  const staleMs = opts.staleMs ?? 2 * 3600 * 1000;
  const me = `${process.pid} ${hostname()}`;
  let waited = false;
  for (;;) {
    opts.signal?.throwIfAborted();
    try {
      await writeFile(path, `${me}\n`, { flag: "wx" });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const owner = (await readFile(path, "utf8").catch(() => "")).trim();
    const [pidText, host] = owner.split(" ");
    const age = await stat(path).then(
      (s) => Date.now() - s.mtimeMs,
      () => 0,
    );
    const pid = Number(pidText);
    const dead = host === hostname() && Number.isInteger(pid) && pid > 0 && !isAlive(pid);
    if (dead || age > staleMs) {
      // Another waiter may remove it at the same moment; the O_EXCL create above decides who gets it.
      await rm(path, { force: true });
      continue;
    }
    if (!waited) {
      waited = true;
      opts.onWait?.(owner);
    }
    try {
      await sleep(opts.pollMs ?? 500, undefined, opts.signal ? { signal: opts.signal } : {});
    } catch (err) {
      opts.signal?.throwIfAborted(); // the caller's reason (e.g. "interrupted by SIGINT"), not a generic AbortError
      throw err;
    }
  }
  try {
    return await fn();
  } finally {
    await rm(path, { force: true });
  }
}
