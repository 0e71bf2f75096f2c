// Runs the CLI in-process with captured streams, the way tests drive `vmdib ...` without spawning.
import { PassThrough, Writable } from "node:stream";
import { main } from "../../src/cli.js";

class Capture extends Writable {
  text = "";
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
}

export async function vmdib(args: string[], env: NodeJS.ProcessEnv = {}, cwd = process.cwd()) {
  const stdout = new Capture();
  const stderr = new Capture();
  const code = await main(args, {
    env,
    cwd,
    stdin: new PassThrough(),
    stdout,
    stderr,
    signal: new AbortController().signal,
  });
  return { code, stdout: stdout.text, stderr: stderr.text };
}
