// Error classes: every failure a user can meet carries what failed, a hint for what to do, and its cause.

export interface ErrorDetails {
  /** What the user can do about it, one or two sentences. */
  hint?: string;
  /** The lower-level error, kept for --debug. */
  cause?: unknown;
  /** Process exit code the CLI should use. */
  exitCode?: number;
  /** Lines of context (e.g. the tail of a script's output or the serial log). */
  context?: string[];
}

/** A failure vmdib understands; the CLI prints `message`, `context` and `hint`, never a stack (unless --debug). */
export class VmdibError extends Error {
  readonly hint: string | undefined;
  readonly exitCode: number;
  readonly context: string[];

  constructor(message: string, details: ErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "VmdibError";
    this.hint = details.hint;
    this.exitCode = details.exitCode ?? 1;
    this.context = details.context ?? [];
  }
}

/** Bad input from the user (flags, environment, element trees): exit code 2, like DIB's argument errors. */
export class UsageError extends VmdibError {
  constructor(message: string, details: Omit<ErrorDetails, "exitCode"> = {}) {
    super(message, { ...details, exitCode: 2 });
    this.name = "UsageError";
  }
}
