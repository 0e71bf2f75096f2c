// The cleanup stack: push the undo step right after making each resource; unwind in reverse; a cleanup error never
// hides the error that made us unwind.

/** One undo step: a name for messages and the action. */
interface Step {
  readonly name: string;
  readonly undo: () => unknown | Promise<unknown>;
}

export class CleanupStack {
  readonly #steps: Step[] = [];
  #unwound = false;

  /** Register the undo for a resource just made. Returns a function that runs that step early (once) and drops it. */
  push(name: string, undo: () => unknown | Promise<unknown>): () => Promise<void> {
    const step: Step = { name, undo };
    this.#steps.push(step);
    return async () => {
      const i = this.#steps.indexOf(step);
      if (i < 0) return;
      this.#steps.splice(i, 1);
      await step.undo();
    };
  }

  get size(): number {
    return this.#steps.length;
  }

  /**
   * Run every step, newest first, even when some fail. Returns the failures (empty when all went well);
   * callers decide whether they matter (after a success: throw; after a failure: report next to the first error).
   */
  async unwind(): Promise<Error[]> {
    this.#unwound = true;
    const errors: Error[] = [];
    for (let step = this.#steps.pop(); step; step = this.#steps.pop()) {
      try {
        await step.undo();
      } catch (err) {
        const e = err instanceof Error ? err : new Error(String(err));
        errors.push(new Error(`cleanup '${step.name}' failed: ${e.message}`, { cause: e }));
      }
    }
    return errors;
  }

  get unwound(): boolean {
    return this.#unwound;
  }
}

/**
 * Run `body` with a fresh stack and always unwind it. The body's error wins; cleanup failures after it go to
 * `onCleanupError` (default: attached to the error as `cleanupErrors`). After a successful body, the first
 * cleanup failure is thrown.
 */
export async function withCleanup<T>(
  body: (stack: CleanupStack) => Promise<T>,
  onCleanupError: (err: Error) => void = () => {},
): Promise<T> {
  const stack = new CleanupStack();
  let result: T;
  try {
    result = await body(stack);
  } catch (err) {
    const failures = await stack.unwind();
    for (const f of failures) onCleanupError(f);
    if (failures.length > 0 && err instanceof Error) {
      (err as Error & { cleanupErrors?: Error[] }).cleanupErrors = failures;
    }
    throw err;
  }
  const failures = await stack.unwind();
  if (failures.length > 0) throw failures[0];
  return result;
}
