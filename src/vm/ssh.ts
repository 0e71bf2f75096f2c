// SSH to the appliance with ssh2: ephemeral keys made on the host, the guest's host key pinned, commands streamed
// with their exit status, interactive shells with a real terminal.
import type { Readable, Writable } from "node:stream";
import ssh2, { type ClientChannel } from "ssh2";
import { VmdibError } from "../errors.js";

// ssh2 is CommonJS: its named exports are only reachable through the default export under ESM.
const { Client, utils } = ssh2;
type Client = InstanceType<typeof Client>;

/** OpenSSH-format key pairs: one for the controller (client), one the guest's sshd serves as its host key. */
export interface SshKeys {
  readonly clientPrivate: string;
  readonly clientPublic: string;
  readonly hostPrivate: string;
  readonly hostPublic: string;
}

/** Fresh ed25519 pairs for one run, made in-process (no ssh-keygen on the host). */
export function generateKeys(): SshKeys {
  const client = parsablePair();
  const host = parsablePair();
  return {
    clientPrivate: client.private,
    clientPublic: client.public,
    hostPrivate: host.private,
    hostPublic: host.public,
  };
}

/**
 * ssh2's generator now and then (about 1 in 250) writes a private key its own parser rejects ("Malformed OpenSSH
 * private key"); such a pair is made again rather than failing a build.
 */
function parsablePair(): { private: string; public: string } {
  for (let attempt = 0; ; attempt++) {
    const pair = utils.generateKeyPairSync("ed25519");
    const ok = !(utils.parseKey(pair.private) instanceof Error) && !(utils.parseKey(pair.public) instanceof Error);
    if (ok || attempt >= 20) return pair;
  }
}

/** The SSH wire blob of an OpenSSH public key line, for comparing against what the server presents. */
function publicBlob(publicKey: string): Buffer {
  const parsed = utils.parseKey(publicKey);
  if (parsed instanceof Error) throw parsed;
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!key) throw new Error("no key in public key text");
  return key.getPublicSSH();
}

/** The remote command ended: its exit code, or the signal that killed it. */
export interface ExitStatus {
  readonly code: number | null;
  readonly signal: string | null;
}

export interface ExecOptions {
  readonly stdout?: Writable;
  readonly stderr?: Writable;
  /** Data for the command's stdin; without it the command reads EOF at once. */
  readonly stdin?: Readable;
  readonly env?: Readonly<Record<string, string>>;
  readonly signal?: AbortSignal;
}

export interface ShellOptions {
  readonly stdin: Readable;
  readonly stdout: Writable;
  readonly term: string;
  readonly cols: number;
  readonly rows: number;
  readonly env?: Readonly<Record<string, string>>;
  /** A command to run on the terminal instead of a login shell (`vmdib build --break`). */
  readonly command?: string;
  /** Called with a function that resizes the remote terminal (wire it to SIGWINCH). */
  readonly onResize?: (resize: (cols: number, rows: number) => void) => void;
}

/** Thrown when the connection dies under a running command; the caller can tell the user why (e.g. QEMU died). */
export class ConnectionLost extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConnectionLost";
  }
}

export interface ConnectOptions {
  readonly port: number;
  readonly keys: SshKeys;
  readonly timeoutMs?: number;
  /** Keepalive probes detect a wedged guest: interval × count is the longest silence tolerated. */
  readonly keepaliveIntervalMs?: number;
  readonly keepaliveCountMax?: number;
}

/** One SSH connection to the guest as root. */
export class SshSession {
  readonly #client: Client;
  #closed = false;
  #closeReason = "";
  readonly #onClose = new Set<() => void>();

  private constructor(client: Client) {
    this.#client = client;
    client.on("close", () => {
      this.#closed = true;
      for (const f of this.#onClose) f();
    });
    client.on("error", (err) => {
      this.#closeReason = err.message;
    });
  }

  static async connect(opts: ConnectOptions): Promise<SshSession> {
    const expected = publicBlob(opts.keys.hostPublic);
    const client = new Client();
    let presented: Buffer | undefined;
    await new Promise<void>((resolve, reject) => {
      client.once("ready", () => resolve());
      client.once("error", (err) => {
        if (presented && !presented.equals(expected)) {
          reject(
            new VmdibError("the appliance's SSH host key is not the one injected into it", {
              cause: err,
              hint: "something else answers on the forwarded port; retry",
            }),
          );
        } else reject(err);
      });
      client.connect({
        host: "127.0.0.1",
        port: opts.port,
        username: "root",
        privateKey: opts.keys.clientPrivate,
        // Pinning: accept exactly the host key we generated and injected, nothing else.
        hostVerifier: (key: Buffer) => {
          presented = key;
          return key.equals(expected);
        },
        readyTimeout: opts.timeoutMs ?? 20_000,
        keepaliveInterval: opts.keepaliveIntervalMs ?? 5_000,
        keepaliveCountMax: opts.keepaliveCountMax ?? 12,
      });
    });
    // No Nagle: each command is a few small packets each way, and Nagle held one back for the guest's delayed ACK
    // (measured in the appliance: 62 ms per quick exec with it, 17 ms without).
    client.setNoDelay(true);
    return new SshSession(client);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /**
   * Open a channel and follow it. `#follow` attaches its listeners inside ssh2's callback, before anything else runs:
   * a quick command's exit status can arrive in the same read as the "exec accepted" reply, and ssh2 emits it at once.
   */
  #run(
    open: (cb: (err: Error | undefined, ch: ClientChannel) => void) => void,
    opts: ExecOptions,
    interactive = false,
    onOpen?: (ch: ClientChannel) => void,
  ): Promise<ExitStatus> {
    if (this.#closed) return Promise.reject(new ConnectionLost("the SSH connection to the appliance is closed"));
    return new Promise((resolve, reject) =>
      open((err, ch) => {
        if (err) return reject(err);
        onOpen?.(ch);
        this.#follow(ch, opts, interactive).then(resolve, reject);
      }),
    );
  }

  /** Run `command` (a shell command line) and stream its output; resolves with its exit status. */
  async exec(command: string, opts: ExecOptions = {}): Promise<ExitStatus> {
    opts.signal?.throwIfAborted();
    return await this.#run(
      (cb) => this.#client.exec(command, opts.env ? { env: { ...opts.env } } : {}, (err, channel) => cb(err, channel)),
      opts,
    );
  }

  /** An interactive login shell on a pseudo-terminal; resolves when it exits. */
  async shell(opts: ShellOptions): Promise<ExitStatus> {
    const pty = { term: opts.term, cols: opts.cols, rows: opts.rows };
    const env = opts.env ? { env: { ...opts.env } } : {};
    return await this.#run(
      (cb) =>
        opts.command === undefined
          ? this.#client.shell(pty, env, (err, channel) => cb(err, channel))
          : this.#client.exec(opts.command, { pty, ...env }, (err, channel) => cb(err, channel)),
      { stdout: opts.stdout, stdin: opts.stdin },
      true,
      (ch) => opts.onResize?.((cols, rows) => ch.setWindow(rows, cols, 0, 0)),
    );
  }

  #follow(ch: ClientChannel, opts: ExecOptions, interactive = false): Promise<ExitStatus> {
    return new Promise<ExitStatus>((resolve, reject) => {
      let status: ExitStatus | undefined;
      const onAbort = () => {
        ch.close();
        reject(opts.signal?.reason);
      };
      const onLost = () => {
        cleanup();
        if (!status) {
          reject(new ConnectionLost(`the SSH connection closed under the command${this.#reason()}`));
        }
      };
      const cleanup = () => {
        opts.signal?.removeEventListener("abort", onAbort);
        this.#onClose.delete(onLost);
        if (opts.stdin) opts.stdin.unpipe(ch);
      };
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      this.#onClose.add(onLost);
      ch.on("exit", (code: number | null, signal?: string) => {
        status = { code: code ?? null, signal: signal ?? null };
      });
      ch.on("close", () => {
        cleanup();
        // A command always reports its exit status before its channel closes; no status means the guest (or the
        // connection to it) went away under it.
        if (status) resolve(status);
        else reject(new ConnectionLost(`the command's channel closed without an exit status${this.#reason()}`));
      });
      // end:false: our stdout/stderr belong to the caller and outlive this command. pipe() honours backpressure,
      // so a fast producer in the guest waits for a slow consumer here instead of filling memory.
      if (opts.stdout) ch.pipe(opts.stdout, { end: false });
      else ch.resume();
      if (interactive) {
        // On a pty the guest's stderr arrives merged into the channel.
      } else if (opts.stderr) ch.stderr.pipe(opts.stderr, { end: false });
      else ch.stderr.resume();
      if (opts.stdin) opts.stdin.pipe(ch);
      else ch.end();
    });
  }

  #reason(): string {
    return this.#closeReason ? ` (${this.#closeReason})` : "";
  }

  /** Close the connection; idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 2_000);
      this.#onClose.add(() => {
        clearTimeout(t);
        resolve();
      });
      this.#client.end();
    });
  }
}
