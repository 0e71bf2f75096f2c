// Tests for src/cli.ts as a process: a closed stdout pipe (`vmdib ... | head`) ends vmdib quietly.
import { spawn } from "node:child_process";
import { join } from "node:path";
import t from "tap";
import { EXIT_PIPE_CLOSED } from "../src/cli.js";
import { PACKAGE_ROOT } from "../src/paths.js";

/** Runs bin/vmdib with a stdout pipe whose reading end is closed before vmdib writes to it. */
async function withClosedStdout(args: string[]): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [join(PACKAGE_ROOT, "bin", "vmdib"), ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  // Node needs tens of milliseconds to start: the pipe is closed long before the first write.
  child.stdout.destroy();
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const code = await new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c)));
  return { code, stderr };
}

t.test("vmdib build --help | true: no stack trace, no message, exit 141 like a program ended by SIGPIPE", async (t) => {
  const r = await withClosedStdout(["build", "--help"]);
  t.equal(r.stderr, "", "nothing on stderr");
  t.equal(r.code, EXIT_PIPE_CLOSED);
});

t.test("the top-level usage and a command's help page end the same way", async (t) => {
  for (const args of [["--help"], ["help", "run"]]) {
    const r = await withClosedStdout(args);
    t.equal(r.stderr, "", `${args.join(" ")}: nothing on stderr`);
    t.equal(r.code, EXIT_PIPE_CLOSED, `${args.join(" ")}: exit 141`);
  }
});
