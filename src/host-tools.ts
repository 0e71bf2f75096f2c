// Host tools for the guest: work a step in the helper VM would do under TCG, done by the host's own programs with the
// same bytes as the result, while the step waits. Two tools: the initramfs compression (`zstd`) and the data member of
// a large .deb that dpkg unpacks (`dpkg-deb --fsys-tarfile`). Pure request checks (parseToolRequest, zstdHostArgv,
// debDataPlan) and the effectful server (serveHostTools) that answers requests in a directory of the work dir shared
// with the guest.
//
// zstd: mkinitramfs compresses its ~130 MB cpio with `zstd -q -9 -T0` (Debian's initramfs.conf COMPRESS=zstd). Under
// TCG that took 39 s in the helper VM (loaded host) against 3-5 s natively, and the output is byte-identical: zstd's
// output depends on its version, level and options only, not on the machine or the number of threads (checked:
// -T1/-T2/-T4/-T8 and the guest's own run give the same bytes). A request from a different zstd version is refused
// and the guest compresses it itself, so the image's initramfs is the same bytes either way.
//
// deb: dpkg unpacks every package through `dpkg-deb --fsys-tarfile DEB`, which writes the decompressed data.tar
// member. Decompressing is deterministic, so the host's xz/zstd/gzip give the same bytes; in the helper VM the
// kernel package's (70 MB of xz, 411 MB of tar) took 13 s against 1.8 s natively. Only a well-formed binary package
// (debian-binary 2.x, control.tar*, data.tar*) is served; anything else is refused and the guest's dpkg-deb judges it.
//
// Protocol (files in DIR, the work dir's HOST_TOOLS_DIR, seen by the chroot as GUEST_HOST_TOOLS_DIR), ID is
// `zstd-N` or `deb-N`:
//   ID.in    the data (the cpio, the .deb), written by the guest first
//   ID.req   zstd: "version LINE" (the guest zstd's `--version`) then "arg WORD" per option; deb: "name FILE" (for
//            the report only). Renamed into place last.
//   ID.work  the host renames ID.req to it when it takes the request (a guest that sees ID.req vanish knows)
//   ID.out + ID.done   the host's answer: the output, then the marker
//   ID.fail  the host refuses or failed: one line why; the guest then runs its own program
// The guest removes every ID.* file once it has its answer. Its side is one sh script, DIR/client (the server puts
// guest/host-tools-client there), which both shims call.
//
// The directory is on a share the guest writes (security_model=none: its symlinks are real host symlinks), so the
// host trusts nothing in it: it works through a descriptor of the directory it made (a guest that swaps the directory
// for a link is not followed, and the server stops), opens what the guest wrote without following links and only if
// it is a plain file, gives the tools their input on stdin (never a path), and creates its answers as new files only.
import { spawn } from "node:child_process";
import { watch } from "node:fs";
import { constants, copyFile, type FileHandle, lstat, open, readdir, rename } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { execa } from "execa";
import { GUEST_DIR } from "./paths.js";
import { type ArMemberRef, readArMembers } from "./vm/appliance/deb.js";

const { O_CREAT, O_DIRECTORY, O_EXCL, O_NOFOLLOW, O_NONBLOCK, O_RDONLY, O_WRONLY } = constants;

/** The work dir's subdirectory the host serves; run-phase binds it into the chroot when it exists. */
export const HOST_TOOLS_DIR = "host-tools";
/** Where chroot scripts find it (must match guest/dib/lib/img-functions and the dpkg element's shims). */
export const GUEST_HOST_TOOLS_DIR = "/tmp/vmdib-host-tools";
/** The guest's side of the protocol, copied into the served directory as `client`. */
const HOST_TOOLS_CLIENT = join(GUEST_DIR, "host-tools-client");

const ID_RE = /^(zstd|deb)-[0-9]{1,10}$/;
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

/** A decompressor per data member the host decodes (xz -T0: in parallel where the stream has blocks). */
const DATA_DECODERS: Readonly<Record<string, readonly [string, ...string[]]>> = {
  "data.tar": ["cat"],
  "data.tar.xz": ["xz", "-dc", "-T0"],
  "data.tar.zst": ["zstd", "-dc", "-q"],
  "data.tar.gz": ["gzip", "-dc"],
};

/**
 * What `dpkg-deb --fsys-tarfile` of a .deb with these ar members writes, as a decompressor over one member (pure), or
 * why the host leaves it to the guest: only the layout dpkg-deb reads without a word (debian-binary 2.x first, then
 * control.tar*, then data.tar*, nothing after it but `_` members) with a compression the host decodes.
 */
export function debDataPlan(
  members: readonly ArMemberRef[],
  debianBinary: string,
): { member: ArMemberRef; argv: readonly [string, ...string[]] } | { refused: string } {
  const [first, control, data, ...rest] = members;
  if (first?.name !== "debian-binary" || !/^2\.\d+\n$/.test(debianBinary))
    return { refused: "not a binary package of format 2.x" };
  if (!control?.name.startsWith("control.tar")) return { refused: "no control.tar member second" };
  const argv = data ? DATA_DECODERS[data.name] : undefined;
  if (!data || !argv) return { refused: `data member '${data?.name ?? "(none)"}' is not decoded on the host` };
  if (data.size === 0) return { refused: "empty data member" };
  if (rest.some((m) => !m.name.startsWith("_"))) return { refused: "members after data.tar" };
  return { member: data, argv };
}

/** What the server reports: one line per answered request. */
export type HostToolsReport = (message: string) => void;

/** Runs `file argv` with stdin from a descriptor or a stream and stdout to a descriptor. */
export type RunTool = (
  file: string,
  argv: readonly string[],
  stdin: number | Readable,
  stdout: number,
) => Promise<void>;

export interface HostToolsDeps {
  /** The host's zstd binary. */
  readonly zstd: string;
  /** Runs a tool; default: a child process. */
  readonly run?: RunTool;
  readonly report: HostToolsReport;
  readonly intervalMs?: number;
}

// child_process rather than execa: execa's types take no descriptors above 9 for stdin/stdout.
const runOnFds: RunTool = (file, argv, stdin, stdout) =>
  new Promise<void>((resolve, reject) => {
    const child = spawn(file, argv, { stdio: [typeof stdin === "number" ? stdin : "pipe", stdout, "pipe"] });
    if (typeof stdin !== "number" && child.stdin) {
      // A tool that stops reading has failed: its exit status says why, not the broken pipe.
      child.stdin.on("error", () => undefined);
      stdin.on("error", (err) => {
        child.kill();
        reject(err);
      });
      stdin.pipe(child.stdin);
    }
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

interface GuestFile {
  readonly fh: FileHandle;
  readonly size: number;
}

/** Opens a file the guest wrote: never through a link, never a FIFO or device (O_NONBLOCK: opening one cannot hang). */
async function openGuestFile(path: string): Promise<GuestFile> {
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

const firstLine = (err: unknown) => (err instanceof Error ? err.message : String(err)).split("\n")[0] ?? "";

/** A request's work: the tool, its argv and its stdin, and what the report calls it. */
interface Job {
  readonly file: string;
  readonly argv: readonly string[];
  readonly stdin: number | Readable;
  readonly what: string;
}

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;

function zstdJob(zstd: string, hostVersion: string, workText: string, input: GuestFile): Job | { refused: string } {
  const plan = zstdHostArgv(parseToolRequest(workText), hostVersion, input.size);
  if ("refused" in plan) return plan;
  return { file: zstd, argv: plan.argv, stdin: input.fh.fd, what: `zstd ${plan.argv.slice(0, -2).join(" ")}` };
}

/** The .deb's name as the guest gave it, for the report only (the server opens nothing by it). */
const debName = (workText: string) => /^name ([A-Za-z0-9.+~%:_-]{1,200})$/m.exec(workText)?.[1] ?? "a .deb";

async function debJob(workText: string, input: GuestFile): Promise<Job | { refused: string }> {
  const name = debName(workText);
  const members = await readArMembers(name, input.fh).catch((err: unknown) => ({
    refused: firstLine(err),
  }));
  if ("refused" in members) return members;
  const head = members[0];
  const text = head ? await input.fh.read(Buffer.alloc(16), 0, Math.min(head.size, 16), head.offset) : undefined;
  const plan = debDataPlan(members, text ? text.buffer.subarray(0, text.bytesRead).toString("latin1") : "");
  if ("refused" in plan) return plan;
  const [file, ...argv] = plan.argv;
  const { offset, size } = plan.member;
  return {
    file,
    argv,
    stdin: input.fh.createReadStream({ start: offset, end: offset + size - 1, autoClose: false }),
    what: `dpkg-deb --fsys-tarfile ${name} (${plan.member.name}, ${mb(size)})`,
  };
}

/**
 * Serves requests in `dir` (which must exist and be the host's own directory) until stop(): answers one request at a
 * time, woken by the directory's change events and a poll. A failure to answer becomes ID.fail (the guest then runs
 * its own program), never an error of the build. First it puts the guest's side of the protocol there, as `client`
 * (guest/host-tools-client: the shims run `sh DIR/client KIND INPUT LINE...`).
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
  await copyFile(HOST_TOOLS_CLIENT, join(root, "client"), constants.COPYFILE_EXCL);
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let busy: Promise<void> = Promise.resolve();

  const answer = async (id: string) => {
    const base = join(root, id);
    const tool = id.startsWith("deb-") ? "dpkg-deb" : "zstd";
    try {
      await rename(`${base}.req`, `${base}.work`);
    } catch {
      return; // the guest gave up on it and removed it
    }
    const opened: FileHandle[] = [];
    try {
      const work = await openGuestFile(`${base}.work`);
      opened.push(work.fh);
      const workText = (await work.fh.read(Buffer.alloc(4096), 0, 4096, 0)).buffer.toString("utf8");
      const input = await openGuestFile(`${base}.in`);
      opened.push(input.fh);
      const job = tool === "zstd" ? zstdJob(deps.zstd, hostVersion, workText, input) : await debJob(workText, input);
      if ("refused" in job) {
        await writeAnswer(`${base}.fail`, `${job.refused}\n`);
        deps.report(`${tool} not run on the host: ${job.refused}`);
        return;
      }
      const out = await createAnswer(`${base}.out`);
      opened.push(out);
      const started = performance.now();
      await run(job.file, job.argv, job.stdin, out.fd);
      await writeAnswer(`${base}.done`, "");
      deps.report(`${job.what} run on the host for the guest (${((performance.now() - started) / 1000).toFixed(1)} s)`);
    } catch (err) {
      await writeAnswer(`${base}.fail`, `host ${tool} failed: ${firstLine(err)}\n`).catch(() => undefined);
      deps.report(`${tool} failed on the host, the guest runs its own: ${firstLine(err)}`);
    } finally {
      for (const fh of opened) await fh.close().catch(() => undefined);
    }
  };

  const poll = async () => {
    const now = await lstat(dir).catch(() => undefined);
    if (!now?.isDirectory() || now.ino !== dirStat.ino || now.dev !== dirStat.dev) {
      stopped = true;
      deps.report("host tools: the guest replaced their directory; the guest runs its own tools from now on");
      return;
    }
    for (const name of await readdir(root).catch(() => [])) {
      const id = name.endsWith(".req") ? name.slice(0, -".req".length) : undefined;
      if (id !== undefined && ID_RE.test(id)) await answer(id);
    }
  };

  let again = false;
  const tick = () => {
    if (timer) clearTimeout(timer);
    timer = undefined;
    busy = poll().finally(() => {
      if (stopped) return;
      // A change seen while polling is looked at at once; otherwise the next poll or change event.
      if (again) {
        again = false;
        tick();
      } else timer = setTimeout(tick, deps.intervalMs ?? 200);
    });
  };
  // The guest's renames reach the host's file system through QEMU, so a watcher sees a request the moment it is made
  // (a .deb's round trip is part of every dpkg unpack); the poll stays for systems without change events.
  let watcher: ReturnType<typeof watch> | undefined;
  try {
    watcher = watch(root, () => {
      if (stopped) return;
      if (timer) tick();
      else again = true;
    });
    watcher.on("error", () => watcher?.close());
  } catch {
    watcher = undefined;
  }
  tick();

  return {
    async stop() {
      stopped = true;
      watcher?.close();
      if (timer) clearTimeout(timer);
      await busy;
      await dirFh.close().catch(() => undefined);
    },
  };
}
