// .deb files: the ar container's member table, read from the file, and decompressing its tar members with the host's
// xz/zstd or node's zlib, streamed from the file.
import { spawn } from "node:child_process";
import { createReadStream } from "node:fs";
import { type FileHandle, open } from "node:fs/promises";
import { Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { VmdibError } from "../../errors.js";
import { type ReadTarOptions, readTar, type TarEntry } from "./tar.js";

/** A member of an ar archive on disk: where its bytes are, not the bytes. */
export interface ArMemberRef {
  name: string;
  path: string;
  offset: number;
  size: number;
}

const AR_MAGIC = "!<arch>\n";

/**
 * The members of the ar archive at `path` (read through `opened` when given, which stays open), from their 60-byte
 * headers only: a .deb (the kernel's is ~70 MB) is never held in memory, its members are streamed from the file by
 * decompressMember.
 */
export async function readArMembers(path: string, opened?: FileHandle): Promise<ArMemberRef[]> {
  const fh = opened ?? (await open(path, "r"));
  try {
    const { size: total } = await fh.stat();
    const head = Buffer.alloc(60);
    await fh.read(head, 0, 8, 0);
    if (head.subarray(0, 8).toString("latin1") !== AR_MAGIC) throw new Error(`${path}: not an ar archive (bad magic)`);
    const out: ArMemberRef[] = [];
    let off = 8;
    while (off + 60 <= total) {
      const { bytesRead } = await fh.read(head, 0, 60, off);
      const header = head.subarray(0, bytesRead).toString("latin1");
      if (bytesRead < 60 || header.slice(58, 60) !== "`\n")
        throw new Error(`${path}: ar header at offset ${off} is corrupt`);
      // GNU ar ends short names with "/"; dpkg writes names without it. Both are accepted.
      const name = header.slice(0, 16).trim().replace(/\/$/, "");
      const size = Number.parseInt(header.slice(48, 58).trim(), 10);
      if (!Number.isFinite(size) || off + 60 + size > total)
        throw new Error(`${path}: ar member '${name}' is truncated`);
      out.push({ name, path, offset: off + 60, size });
      off += 60 + size + (size % 2); // members are 2-byte aligned
    }
    return out;
  } finally {
    if (!opened) await fh.close();
  }
}

/** The entries of a .deb's data or control tar, streamed from the file (one entry's contents in memory at a time). */
export async function debTarEntries(
  path: string,
  which: "data" | "control",
  opts: ReadTarOptions = {},
): Promise<AsyncGenerator<TarEntry & { skipped?: boolean; file?: string }>> {
  return readTar(decompressMember(debTarMember(await readArMembers(path), which)), opts);
}

/** The member named `<prefix>.tar[.xz|.zst|.gz]` (prefix "data" or "control"). */
export function debTarMember<M extends { name: string }>(members: M[], prefix: "data" | "control"): M {
  const m = members.find((x) => x.name === `${prefix}.tar` || x.name.startsWith(`${prefix}.tar.`));
  if (!m) throw new Error(`no ${prefix}.tar member (members: ${members.map((x) => x.name).join(", ")})`);
  return m;
}

/**
 * A readable of the decompressed member. xz and zstd run as child processes (faster than any JS decoder and
 * available on every host vmdib supports); gzip uses node's zlib. A decoder failure surfaces as a stream error.
 */
export function decompressMember(member: ArMemberRef): Readable {
  const ext = member.name.slice(member.name.lastIndexOf(".") + 1);
  if (!["tar", "gz", "xz", "zst"].includes(ext)) throw new Error(`unsupported compression '${ext}' in ${member.name}`);
  // An empty member has no byte range to read (createReadStream's `end` is inclusive).
  const input =
    member.size === 0
      ? Readable.from([Buffer.alloc(0)])
      : createReadStream(member.path, { start: member.offset, end: member.offset + member.size - 1 });
  if (ext === "tar") return input;
  if (ext === "gz") return pipeErrors(input, createGunzip());
  if (ext === "xz") return spawnFilter("xz", ["-dc", "-T1"], input);
  return spawnFilter("zstd", ["-dc", "-q"], input);
}

/** `from.pipe(to)`, with an error of `from` (e.g. an unreadable file) also ending `to`. */
export function pipeErrors(from: Readable, to: NodeJS.ReadWriteStream & Readable): Readable {
  from.on("error", (err) => to.destroy(err));
  return from.pipe(to);
}

/**
 * Pipe `input` (bytes, or a stream such as a file's) through `cmd args`; the returned stream errors if the tool is
 * missing, exits non-zero, or the input stream fails.
 */
export function spawnFilter(cmd: string, args: string[], input: Buffer | Readable): Readable {
  const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"] });
  const out = child.stdout;
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  const fail = (err: Error) => out.destroy(err);
  child.on("error", (err: NodeJS.ErrnoException) =>
    fail(
      err.code === "ENOENT"
        ? new VmdibError(`'${cmd}' is not installed`, {
            hint: `install ${cmd} (Debian: apt install ${cmd === "xz" ? "xz-utils" : cmd})`,
            cause: err,
          })
        : err,
    ),
  );
  // A close event with a non-zero code after stdout ended still has to fail the consumer: hold 'end' until exit.
  const result = new Readable({ read() {} });
  out.on("data", (d: Buffer) => {
    if (!result.push(d)) out.pause();
  });
  result._read = () => out.resume();
  out.on("error", (err) => result.destroy(err));
  child.on("close", (code) => {
    if (code === 0) result.push(null);
    else result.destroy(new Error(`${cmd} ${args.join(" ")} failed (exit ${code}): ${stderr.trim()}`));
  });
  result.on("close", () => {
    if (child.exitCode === null) child.kill(); // consumer gave up early: do not leave the decoder running
  });
  child.stdin.on("error", () => {}); // EPIPE when the tool dies early: reported through 'close' instead
  if (Buffer.isBuffer(input)) child.stdin.end(input);
  else {
    input.on("error", (err) => {
      result.destroy(err);
      if (child.exitCode === null) child.kill();
    });
    input.pipe(child.stdin);
    result.on("close", () => input.destroy());
  }
  return result;
}
