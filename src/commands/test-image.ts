// `vmdib test IMAGE`: boot a built image headless (the image is never changed) and report PASS/FAIL per check:
// login prompt, serial console on the kernel command line, root by label, and with a key an SSH login.
import { resolve } from "node:path";
import { UsageError } from "../errors.js";
import { type CheckStatus, DEFAULT_TEST_TIMEOUT_MS, type ImageTestReport, testImage } from "../vm/image-boot.js";
import { type ImageCommandOptions, imageFlagSpecs, parseImageArgs } from "./boot.js";
import type { Command } from "./context.js";
import { type FlagSpec, optionsHelp, positiveInt } from "./vm-flags.js";

export interface TestCommandOptions extends ImageCommandOptions {
  image: string;
  sshKey?: string;
  user?: string;
  timeoutS?: number;
  json: boolean;
}

type Parsed = Omit<TestCommandOptions, "image"> & { image?: string };

export function testFlagSpecs(cwd: string): FlagSpec<Parsed>[] {
  return [
    {
      names: ["--ssh-key"],
      value: "FILE",
      help: "private key for check 4 (unencrypted; its public half is in the image, e.g. by devuser)",
      apply: (o, v) => {
        o.sshKey = resolve(cwd, v);
      },
    },
    {
      names: ["--user"],
      value: "NAME",
      help: "user for check 4 (DIB's devuser element: devuser); without --ssh-key, the password\nin the environment variable VMDIB_SSH_PASSWORD is used",
      apply: (o, v) => {
        if (!/^[a-z_][a-z0-9_.-]*\$?$/i.test(v)) throw new UsageError(`'${v}' is not a user name`);
        o.user = v;
      },
    },
    {
      names: ["--timeout"],
      value: "SECONDS",
      help: `for the whole test (default ${DEFAULT_TEST_TIMEOUT_MS / 1000}: software emulation is slow)`,
      apply: (o, v, f) => {
        o.timeoutS = positiveInt(f, v);
      },
    },
    {
      names: ["--json"],
      help: "print the report as JSON on stdout",
      apply: (o) => {
        o.json = true;
      },
    },
    ...imageFlagSpecs("show progress and the guest's console live on stderr"),
  ];
}

export const TEST_HELP = `usage: vmdib test [options] IMAGE

Boot IMAGE headless under QEMU (with -snapshot: the image file is never changed) and check that it
  1. reaches a login prompt on the serial console,
  2. has the serial console on its kernel command line (console=ttyS0),
  3. mounts its root file system by label (root=LABEL=..., not the build's loop device),
  4. with --ssh-key and --user: accepts an SSH login and runs \`findmnt\` and \`cat /proc/cmdline\`.
Prints PASS/FAIL per check (and the tail of the serial console on failure); exits 0 only if none failed.

${optionsHelp(testFlagSpecs("."))}`;

export function parseTestArgs(args: readonly string[], cwd: string): TestCommandOptions {
  const o = parseImageArgs<Parsed>(args, cwd, "test", testFlagSpecs(cwd), { uefi: false, verbose: false, json: false });
  if (o.sshKey !== undefined && o.user === undefined) {
    throw new UsageError("--ssh-key needs --user", {
      hint: "name the user the key belongs to in the image, e.g. `--user devuser` for DIB's devuser element",
    });
  }
  return { ...o, image: o.image as string };
}

const MARK: Readonly<Record<CheckStatus, string>> = { pass: "PASS", fail: "FAIL", skip: "SKIP" };

/** The report as the terminal shows it. */
export function formatReport(r: ImageTestReport): string {
  const lines = [`vmdib test ${r.image} (${r.format}, ${r.firmware.toUpperCase()}, ${r.accel})`];
  for (const c of r.checks) lines.push(`  ${MARK[c.status]}  ${c.title}`, `        ${c.detail}`);
  if (r.kernelCmdline) lines.push(`kernel command line: ${r.kernelCmdline}`);
  if (r.ssh) {
    lines.push(`ssh ${r.ssh.user}@127.0.0.1:${r.ssh.port}${r.ssh.hostKey ? ` (host key ${r.ssh.hostKey})` : ""}`);
    for (const c of r.ssh.commands) {
      lines.push(`  $ ${c.command}   (exit ${c.exitCode ?? "?"})`);
      for (const l of `${c.stdout}${c.stderr}`.trimEnd().split("\n")) if (l) lines.push(`    ${l}`);
    }
  }
  if (r.qemuExit) lines.push(`qemu: ${r.qemuExit}`);
  for (const d of r.diagnosis) lines.push(`diagnosis: ${d}`);
  const ran = r.checks.filter((c) => c.status !== "skip");
  const passed = ran.filter((c) => c.status === "pass").length;
  lines.push(
    `result: ${r.passed ? "PASS" : "FAIL"} (${passed} of ${ran.length} checks passed) in ${r.totalSeconds} s` +
      (r.loginPromptSeconds !== null ? `, login prompt after ${r.loginPromptSeconds} s` : ""),
  );
  if (!r.passed) {
    lines.push(
      `serial console (last ${r.serialTail.length} lines${r.serialLogCopy ? `; all of it: ${r.serialLogCopy}` : ""}):`,
    );
    for (const l of r.serialTail) lines.push(`  | ${l}`);
    if (r.serialTail.length === 0) lines.push("  | (empty)");
  }
  return `${lines.join("\n")}\n`;
}

/** A password never travels on the command line (other users see it in ps): it comes from the environment. */
function passwordFrom(env: NodeJS.ProcessEnv): string {
  const password = env.VMDIB_SSH_PASSWORD;
  if (password === undefined) {
    throw new UsageError("--user needs --ssh-key, or a password in VMDIB_SSH_PASSWORD", {
      hint: "e.g. `--ssh-key ~/.ssh/id_ed25519 --user devuser`",
    });
  }
  return password;
}

export const run: Command = async (ctx) => {
  if (ctx.args.includes("-h") || ctx.args.includes("--help")) {
    ctx.stdout.write(TEST_HELP);
    return 0;
  }
  const o = parseTestArgs(ctx.args, ctx.cwd);
  const report = await testImage({
    image: o.image,
    uefi: o.uefi,
    env: ctx.env,
    signal: ctx.signal,
    ...(o.memoryMiB ? { memoryMiB: o.memoryMiB } : {}),
    ...(o.cpus ? { cpus: o.cpus } : {}),
    ...(o.accel ? { accel: o.accel } : {}),
    ...(o.sshKey && o.user ? { sshKey: o.sshKey, user: o.user } : {}),
    ...(!o.sshKey && o.user ? { user: o.user, sshPassword: passwordFrom(ctx.env) } : {}),
    ...(o.timeoutS ? { timeoutMs: o.timeoutS * 1000 } : {}),
    onStart: (b) =>
      ctx.stderr.write(
        `vmdib: booting ${o.image} (${b.format}, ${o.uefi ? "UEFI" : "BIOS"}, ${b.accel.accel}); waiting up to ${
          o.timeoutS ?? DEFAULT_TEST_TIMEOUT_MS / 1000
        } s for a login prompt\n`,
      ),
    ...(o.verbose
      ? {
          log: (line: string) => ctx.stderr.write(`vmdib: ${line}\n`),
          onConsole: (chunk: string) => ctx.stderr.write(chunk),
        }
      : {}),
  });
  ctx.stdout.write(o.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
  return report.passed ? 0 : 1;
};
