// What every subcommand receives: its arguments and the process edges (streams, environment, signals), injected.
import type { Readable, Writable } from "node:stream";

export interface CommandContext {
  /** Arguments after the subcommand name. */
  readonly args: string[];
  readonly env: NodeJS.ProcessEnv;
  readonly cwd: string;
  readonly stdin: Readable & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };
  readonly stdout: Writable & { isTTY?: boolean; columns?: number; rows?: number };
  readonly stderr: Writable & { isTTY?: boolean };
  /** Aborted on SIGINT/SIGTERM; commands stop work and unwind their cleanup stack. */
  readonly signal: AbortSignal;
}

/** A subcommand: returns the process exit code, throws VmdibError for failures the user should read. */
export type Command = (ctx: CommandContext) => Promise<number>;
