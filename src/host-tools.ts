// Host tools for the guest: the build's initramfs compression (`zstd`) run by the host's own zstd while a step waits
// for it in the helper VM. Pure request parsing and argv (parseToolRequest, zstdHostArgv) and the effectful server
// (serveHostTools) that answers requests in a directory of the work dir shared with the guest.
//
// Why: mkinitramfs compresses its ~130 MB cpio with `zstd -q -9 -T0` (Debian's initramfs.conf COMPRESS=zstd).
// Under TCG that took 39 s in the helper VM (loaded host) against 3-5 s natively, and the output is byte-identical:
// zstd's output depends on its version, level and options only, not on the machine or the number of threads (checked:
// -T1/-T2/-T4/-T8 and the guest's own run give the same bytes). A request from a different zstd version is refused
// and the guest compresses it itself, so the image's initramfs is the same bytes either way.
//
// Protocol (files in DIR, the work dir's HOST_TOOLS_DIR, seen by the chroot as GUEST_HOST_TOOLS_DIR):
//   ID.in    the data, written by the guest first
//   ID.req   "version LINE" (the guest zstd's `--version`) then "arg WORD" per option, renamed into place last
//   ID.work  the host renames ID.req to it when it takes the request (a guest that sees ID.req vanish knows)
//   ID.out + ID.done   the host's answer: compressed data, then the marker
//   ID.fail  the host refuses or failed: one line why; the guest then runs its own zstd
// The guest removes every ID.* file once it has its answer.
//
// The directory is on a share the guest writes (security_model=none: its symlinks are real host symlinks), so the
// host trusts nothing in it: it works through a descriptor of the directory it made (a guest that swaps the directory
// for a link is not followed, and the server stops), opens what the guest wrote without following links and only if
// it is a plain file, gives zstd the input as its stdin (never a path), and creates its answers as new files only.
import { spawn } from "node:child_process";
import { constants, type FileHandle, lstat, open, readdir, rename } from "node:fs/promises";
import { join } from "node:path";
import { execa } from "execa";

const { O_CREAT, O_DIRECTORY, O_EXCL, O_NOFOLLOW, O_NONBLOCK, O_RDONLY, O_WRONLY } = constants;

/** The work dir's subdirectory the host serves; run-phase binds it into the chroot when it exists. */
export const HOST_TOOLS_DIR = "host-tools";
/** Where chroot scripts find it (must match guest/dib/lib/img-functions and elements/dpkg/post-install.d). */
export const GUEST_HOST_TOOLS_DIR = "/tmp/vmdib-host-tools";

const ID_RE = /^zstd-[0-9]{1,10}$/;
/** zstd options a request may carry: quiet, level, threads, stdout. Anything else is refused (nothing else is run). */
const ZSTD_OPTION_RE = /^-(q|c|[1-9]|1[0-9]|T[0-9]{1,3})$/;

export interface ToolRequest {
  /** The guest zstd's `zstd --version` line. */
  readonly version: string;
  readonly args: readonly string[];
}

/** Parses an ID.req text (pure). */
export function parseToolRequest(text: string): ToolRequest {
  let version = "";
  const args: string[] = [];
  for (const line of text.split("\n")) {
    if (line.startsWith("version ")) version = line.slice("version ".length).trim();
    else if (line.startsWith("arg ")) args.push(line.slice("arg ".length));
  }
  return { version, args };
}

/**
 * The host zstd argv for a request (pure): its options, `-c` and the input's size, or why it is refused. Only the
 * options of ZSTD_OPTION_RE pass, `-c` must be among them (the answer is stdout), and the versions must be equal
 * (the guarantee of identical bytes). The input comes on stdin: `--stream-size` gives zstd the size it would have
 * read from the file, so the frame (content size, parameters) is the same bytes as `zstd ... -c FILE`.
 */
export function zstdHostArgv(
  req: ToolRequest,
  hostVersion: string,
  inputBytes: number,
): { argv: string[] } | { refused: string } {
  if (!req.version || req.version !== hostVersion.trim()) {
    return { refused: `guest ${req.version || "zstd of unknown version"} is not the host's ${hostVersion.trim()}` };
  }
  const bad = req.args.find((a) => !ZSTD_OPTION_RE.test(a));
  if (bad !== undefined) return { refused: `option '${bad}' is not served on the host` };
  if (!req.args.includes("-c")) return { refused: "only compression to stdout (-c) is served on the host" };
  return { argv: [...req.args.filter((a) => a !== "-c"), "-c", `--stream-size=${inputBytes}`] };
}

/** What the server reports: one line per answered request. */
export type HostToolsReport = (message: string) => void;

export interface HostToolsDeps {
  /** The host's zstd binary. */
  readonly zstd: string;
  /** Runs zstd with argv, stdin and stdout on the given descriptors; default: a child process. */
  readonly run?: (file: string, argv: readonly string[], stdin: number, stdout: number) => Promise<void>;
  readonly report: HostToolsReport;
  readonly intervalMs?: number;
}

// child_process rather than execa: execa's types take no descriptors above 9 for stdin/stdout.
const runOnFds = (file: string, argv: readonly string[], stdin: number, stdout: number) =>
  new Promise<void>((resolve, reject) => {
    const child = spawn(file, argv, { stdio: [stdin, stdout, "pipe"] });
    let stderr = "";
    child.stderr?.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    child.on("error", reject);
    child.on("close", (code, signal) =>
      code === 0 ? resolve() : reject(new Error(stderr.trim() || `${file} ended with ${code ?? signal}`)),
    );
  });

/** The host zstd's `--version` line, or undefined when there is none that runs. */
export async function hostZstdVersion(zstd: string): Promise<string | undefined> {
  try {
    return (await execa(zstd, ["--version"], { stdin: "ignore" })).stdout.trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Opens a file the guest wrote: never through a link, never a FIFO or device (O_NONBLOCK: opening one cannot hang). */
async function openGuestFile(path: string): Promise<{ fh: FileHandle; size: number }> {
  const fh = await open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK);
  const st = await fh.stat();
  if (!st.isFile()) {
    await fh.close();
    throw new Error(`${path.split("/").pop()} is not a regular file`);
  }
  return { fh, size: st.size };
}

/** Creates an answer file: a new file only (O_EXCL), so nothing the guest planted under the name is written through. */
const createAnswer = (path: string) => open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o644);

async function writeAnswer(path: string, text: string): Promise<void> {
  const fh = await createAnswer(path);
  try {
    await fh.writeFile(text);
  } finally {
    await fh.close();
  }
}

const firstLine = (err: unknown) => (err instanceof Error ? err.message : String(err)).split("\n")[0];

/**
 * Serves requests in `dir` (which must exist and be the host's own directory) until stop(): polls it, answers one
 * request at a time. A failure to answer becomes ID.fail (the guest then compresses itself), never an error of the
 * build.
 */
export async function serveHostTools(
  dir: string,
  hostVersion: string,
  deps: HostToolsDeps,
): Promise<{ stop(): Promise<void> }> {
  const run = deps.run ?? runOnFds;
  const dirFh = await open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  const dirStat = await dirFh.stat();
  // Linux names the directory by its descriptor, so every path below resolves in the directory that was opened even
  // if the guest renames it away; elsewhere the check in poll() is what stands between the server and a swapped link.
  const root = process.platform === "linux" ? `/proc/self/fd/${dirFh.fd}` : dir;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let busy: Promise<void> = Promise.resolve();

  const answer = async (id: string) => {
    const base = join(root, id);
    try {
      await rename(`${base}.req`, `${base}.work`);
    } catch {
      return; // the guest gave up on it and removed it
    }
    const opened: FileHandle[] = [];
    try {
      const work = await openGuestFile(`${base}.work`);
      opened.push(work.fh);
      const req = parseToolRequest((await work.fh.read(Buffer.alloc(4096), 0, 4096, 0)).buffer.toString("utf8"));
      const input = await openGuestFile(`${base}.in`);
      opened.push(input.fh);
      const plan = zstdHostArgv(req, hostVersion, input.size);
      if ("refused" in plan) {
        await writeAnswer(`${base}.fail`, `${plan.refused}\n`);
        deps.report(`zstd not run on the host: ${plan.refused}`);
        return;
      }
      const out = await createAnswer(`${base}.out`);
      opened.push(out);
      const started = performance.now();
      await run(deps.zstd, plan.argv, input.fh.fd, out.fd);
      await writeAnswer(`${base}.done`, "");
      deps.report(
        `zstd ${plan.argv.slice(0, -2).join(" ")} run on the host for the guest (${((performance.now() - started) / 1000).toFixed(1)} s)`,
      );
    } catch (err) {
      await writeAnswer(`${base}.fail`, `host zstd failed: ${firstLine(err)}\n`).catch(() => undefined);
      deps.report(`zstd failed on the host, the guest compresses itself: ${firstLine(err)}`);
    } finally {
      for (const fh of opened) await fh.close().catch(() => undefined);
    }
  };

  const poll = async () => {
    const now = await lstat(dir).catch(() => undefined);
    if (!now?.isDirectory() || now.ino !== dirStat.ino || now.dev !== dirStat.dev) {
      stopped = true;
      deps.report("host tools: the guest replaced their directory; the guest compresses itself from now on");
      return;
    }
    for (const name of await readdir(root).catch(() => [])) {
      const id = name.endsWith(".req") ? name.slice(0, -".req".length) : undefined;
      if (id !== undefined && ID_RE.test(id)) await answer(id);
    }
  };

  const tick = () => {
    busy = poll().finally(() => {
      if (!stopped) timer = setTimeout(tick, deps.intervalMs ?? 200);
    });
  };
  tick();

  return {
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await busy;
      await dirFh.close().catch(() => undefined);
    },
  };
}
