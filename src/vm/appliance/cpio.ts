// newc cpio (the initramfs format, "070701"): an append-only writer to a file descriptor, and a parser for tests/checks.
import { writeSync } from "node:fs";

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

export interface CpioEntry {
  /** Path without a leading slash ("usr/bin/ls"); "." is the root. */
  name: string;
  /** Full st_mode: file-type bits | permission bits (incl. setuid/setgid/sticky). */
  mode: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  /** Entries sharing an `ino` (and nlink > 1) are hard links of one file. */
  ino?: number;
  nlink?: number;
  rdevmajor?: number;
  rdevminor?: number;
  /** File contents, or the symlink target. */
  data?: Buffer;
}

const TRAILER = "TRAILER!!!";

function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, "0");
}

function pad4(n: number): number {
  return (4 - (n % 4)) % 4;
}

/** Encodes one entry (header, name, data, padding) as the kernel's initramfs unpacker reads it. */
export function encodeCpioEntry(e: CpioEntry, ino: number): Buffer[] {
  const name = Buffer.from(`${e.name}\0`, "utf8");
  const data = e.data ?? Buffer.alloc(0);
  const header = Buffer.from(
    [
      "070701",
      hex8(e.ino ?? ino),
      hex8(e.mode),
      hex8(e.uid ?? 0),
      hex8(e.gid ?? 0),
      hex8(e.nlink ?? ((e.mode & S_IFMT) === S_IFDIR ? 2 : 1)),
      hex8(e.mtime ?? 0),
      hex8(data.length),
      hex8(0), // devmajor/devminor of the filesystem: irrelevant, the kernel keys hard links on ino alone here
      hex8(0),
      hex8(e.rdevmajor ?? 0),
      hex8(e.rdevminor ?? 0),
      hex8(name.length),
      hex8(0), // checksum: only for the "070702" variant
    ].join(""),
    "latin1",
  );
  const parts: Buffer[] = [header, name, Buffer.alloc(pad4(header.length + name.length))];
  if (data.length) parts.push(data, Buffer.alloc(pad4(data.length)));
  return parts;
}

/** Writes entries to an open file descriptor; `finish()` appends the trailer. Inode numbers are assigned here. */
export class CpioWriter {
  private nextIno = 1;
  private bytes = 0;

  constructor(private readonly fd: number) {}

  /** A fresh inode number, for callers that group hard links themselves. */
  allocIno(): number {
    return this.nextIno++;
  }

  add(e: CpioEntry): void {
    for (const part of encodeCpioEntry(e, e.ino ?? this.allocIno())) {
      let off = 0;
      while (off < part.length) off += writeSync(this.fd, part, off, part.length - off);
      this.bytes += part.length;
    }
  }

  get size(): number {
    return this.bytes;
  }

  finish(): void {
    this.add({ name: TRAILER, mode: 0, nlink: 1, ino: 0 });
    // The kernel reads initramfs in 512-byte blocks; pad so concatenated archives line up.
    const pad = (512 - (this.bytes % 512)) % 512;
    if (pad) {
      writeSync(this.fd, Buffer.alloc(pad));
      this.bytes += pad;
    }
  }
}

export interface ParsedCpioEntry extends Required<Omit<CpioEntry, "data">> {
  data: Buffer;
}

/** Parse an uncompressed newc archive (stops at the trailer). For tests and integrity checks. */
export function parseCpio(buf: Buffer): ParsedCpioEntry[] {
  const out: ParsedCpioEntry[] = [];
  let off = 0;
  for (;;) {
    if (off + 110 > buf.length) throw new Error("cpio archive truncated (no trailer)");
    const magic = buf.subarray(off, off + 6).toString("latin1");
    if (magic !== "070701" && magic !== "070702") throw new Error(`bad cpio magic at offset ${off}`);
    const f = (i: number) => Number.parseInt(buf.subarray(off + 6 + i * 8, off + 14 + i * 8).toString("latin1"), 16);
    const namesize = f(11);
    const filesize = f(6);
    const nameStart = off + 110;
    const name = buf.subarray(nameStart, nameStart + namesize - 1).toString("utf8");
    const dataStart = nameStart + namesize + pad4(110 + namesize);
    if (name === TRAILER) return out;
    out.push({
      name,
      ino: f(0),
      mode: f(1),
      uid: f(2),
      gid: f(3),
      nlink: f(4),
      mtime: f(5),
      rdevmajor: f(9),
      rdevminor: f(10),
      data: buf.subarray(dataStart, dataStart + filesize),
    });
    off = dataStart + filesize + pad4(filesize);
  }
}
