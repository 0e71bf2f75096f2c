// A minimal QMP (QEMU Machine Protocol) client over a unix socket: connect (waiting for QEMU to create the
// socket), negotiate capabilities, run commands and get their results; asynchronous events are collected, not acted on.
import { connect, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

/** A command QEMU answered with an error. */
export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    desc: string,
  ) {
    super(`QMP ${command}: ${desc}`);
    this.name = "QmpError";
  }
}

interface Pending {
  readonly command: string;
  resolve(value: unknown): void;
  reject(err: Error): void;
}

export interface QmpEvent {
  readonly event: string;
  readonly data?: unknown;
}

export class QmpClient {
  readonly events: QmpEvent[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private buf = "";
  private closedWith: Error | undefined;

  private constructor(private readonly sock: Socket) {
    sock.setEncoding("utf8");
    sock.on("data", (d: string) => this.onData(d));
    sock.on("error", (err) => this.fail(err));
    sock.on("close", () => this.fail(new Error("QMP connection closed")));
  }

  /**
   * Connect to QEMU's `-qmp unix:PATH,server=on,wait=off` socket. QEMU creates it a moment after it starts, so
   * ENOENT/ECONNREFUSED are retried until `timeoutMs` passes.
   */
  static async connect(path: string, timeoutMs = 10_000): Promise<QmpClient> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      try {
        const sock = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path);
          s.once("connect", () => {
            s.off("error", reject);
            resolve(s);
          });
          s.once("error", reject);
        });
        const client = new QmpClient(sock);
        await client.greeting(Math.max(1000, end - Date.now()));
        await client.execute("qmp_capabilities");
        return client;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if ((code !== "ENOENT" && code !== "ECONNREFUSED") || Date.now() > end) throw err;
        await sleep(20);
      }
    }
  }

  private greetingWaiter: ((ok: boolean) => void) | undefined;

  private greeting(timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("QEMU sent no QMP greeting")), timeoutMs);
      this.greetingWaiter = (ok) => {
        clearTimeout(timer);
        if (ok) resolve();
        else reject(this.closedWith ?? new Error("QMP connection closed before the greeting"));
      };
    });
  }

  private onData(d: string): void {
    this.buf += d;
    for (let nl = this.buf.indexOf("\n"); nl >= 0; nl = this.buf.indexOf("\n")) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return; // not ours to interpret
    }
    if ("QMP" in msg) {
      this.greetingWaiter?.(true);
      this.greetingWaiter = undefined;
      return;
    }
    if (typeof msg.event === "string") {
      this.events.push({ event: msg.event, data: msg.data });
      return;
    }
    const id = typeof msg.id === "number" ? msg.id : undefined;
    const p = id === undefined ? undefined : this.pending.get(id);
    if (!p || id === undefined) return;
    this.pending.delete(id);
    if ("error" in msg) {
      const e = (msg.error ?? {}) as { class?: string; desc?: string };
      p.reject(new QmpError(p.command, e.class ?? "GenericError", e.desc ?? "unknown error"));
    } else {
      p.resolve(msg.return);
    }
  }

  private fail(err: Error): void {
    this.closedWith ??= err;
    this.greetingWaiter?.(false);
    this.greetingWaiter = undefined;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  /** Run one command; resolves with its `return` value. */
  execute<T = unknown>(command: string, args?: Readonly<Record<string, unknown>>): Promise<T> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { command, resolve: resolve as (v: unknown) => void, reject });
      this.sock.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`);
    });
  }

  close(): void {
    this.sock.destroy();
  }
}
