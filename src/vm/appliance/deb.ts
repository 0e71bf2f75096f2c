// .deb files: the ar container (pure parser) and decompressing its tar members with the host's xz/zstd or node's zlib.
import { spawn } from "node:child_process";
import { Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { VmdibError } from "../../errors.js";

export interface ArMember {
  name: string;
  data: Buffer;
}

const AR_MAGIC = "!<arch>\n";

/** The members of an ar archive (the .deb container), in order. Data are views into `buf`, not copies. */
export function parseAr(buf: Buffer): ArMember[] {
  if (buf.subarray(0, 8).toString("latin1") !== AR_MAGIC) throw new Error("not an ar archive (bad magic)");
  const out: ArMember[] = [];
  let off = 8;
  while (off + 60 <= buf.length) {
    const header = buf.subarray(off, off + 60).toString("latin1");
    if (header.slice(58, 60) !== "`\n") throw new Error(`ar header at offset ${off} is corrupt`);
    // GNU ar ends short names with "/"; dpkg writes names without it. Both are accepted.
    const name = header.slice(0, 16).trim().replace(/\/$/, "");
    const size = Number.parseInt(header.slice(48, 58).trim(), 10);
    if (!Number.isFinite(size) || off + 60 + size > buf.length) throw new Error(`ar member '${name}' is truncated`);
    out.push({ name, data: buf.subarray(off + 60, off + 60 + size) });
    off += 60 + size + (size % 2); // members are 2-byte aligned
  }
  return out;
}

/** The member named `<prefix>.tar[.xz|.zst|.gz]` (prefix "data" or "control"). */
export function debTarMember(members: ArMember[], prefix: "data" | "control"): ArMember {
  const m = members.find((x) => x.name === `${prefix}.tar` || x.name.startsWith(`${prefix}.tar.`));
  if (!m) throw new Error(`no ${prefix}.tar member (members: ${members.map((x) => x.name).join(", ")})`);
  return m;
}

/**
 * A readable of the decompressed member. xz and zstd run as child processes (faster than any JS decoder and
 * available on every host vmdib supports); gzip uses node's zlib. A decoder failure surfaces as a stream error.
 */
export function decompressMember(member: ArMember): Readable {
  const ext = member.name.slice(member.name.lastIndexOf(".") + 1);
  if (ext === "tar") return Readable.from([member.data]);
  if (ext === "gz") return Readable.from([member.data]).pipe(createGunzip());
  if (ext === "xz") return spawnFilter("xz", ["-dc", "-T1"], member.data);
  if (ext === "zst") return spawnFilter("zstd", ["-dc", "-q"], member.data);
  throw new Error(`unsupported compression '${ext}' in ${member.name}`);
}

/** Pipe `input` through `cmd args`; the returned stream errors if the tool is missing or exits non-zero. */
export function spawnFilter(cmd: string, args: string[], input: Buffer): Readable {
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
  child.stdin.end(input);
  return result;
}
