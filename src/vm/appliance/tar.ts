// Streaming tar reader (ustar, GNU long names, pax): async-iterates entries of a byte stream, one body in memory at a time.
import { closeSync, openSync, writeSync } from "node:fs";

export type TarType = "file" | "hardlink" | "symlink" | "chardev" | "blockdev" | "dir" | "fifo";

export interface TarEntry {
  /** Path as stored, e.g. "./usr/bin/ls" or "usr/bin/" (callers normalise). */
  path: string;
  type: TarType;
  /** Permission bits including setuid/setgid/sticky (no file-type bits). */
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  /** Symlink target, or the path a hard link refers to. */
  linkname: string;
  devmajor: number;
  devminor: number;
  /** File contents (empty for everything but regular files). */
  data: Buffer;
}

const TYPES: Record<string, TarType> = {
  "0": "file",
  "\0": "file",
  "7": "file",
  "1": "hardlink",
  "2": "symlink",
  "3": "chardev",
  "4": "blockdev",
  "5": "dir",
  "6": "fifo",
};

/** A byte stream (e.g. a Readable) or, for tests, a list of chunks. */
export type TarSource = AsyncIterable<Buffer | string> | Iterable<Buffer | string>;

/**
 * Byte source with "give me exactly n bytes" on top of an async iterable of chunks. A body is copied once into a
 * buffer of its own size, and what is left of the last chunk stays a view of that chunk: no intermediate
 * concatenation, nothing large kept alive by a small remainder (the kernel package streams ~400 MB through here).
 */
class ByteReader {
  private chunks: Buffer[] = [];
  private length = 0;
  private done = false;
  private readonly it: AsyncIterator<Buffer | string> | Iterator<Buffer | string>;

  constructor(source: TarSource) {
    this.it = Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : source[Symbol.iterator]();
  }

  /** Pull chunks until at least n bytes are buffered (or the stream ends). */
  private async fill(n: number): Promise<void> {
    while (this.length < n && !this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else {
        const b = typeof r.value === "string" ? Buffer.from(r.value) : r.value;
        this.chunks.push(b);
        this.length += b.length;
      }
    }
  }

  /**
   * Exactly n bytes (a copy, or the whole of one chunk), or undefined if the stream ends first. A body longer than
   * what is buffered is copied chunk by chunk as the chunks arrive, so it is never in memory twice (the chunks and
   * the copy): the kernel package's largest module is ~18 MB. With `into` (at least n bytes) the bytes are copied
   * there and a view of it is returned.
   */
  async read(n: number, into?: Buffer): Promise<Buffer | undefined> {
    const first = this.chunks[0];
    if (!into && first?.length === n) {
      this.chunks.shift();
      this.length -= n;
      return first;
    }
    if (this.length >= n) {
      const out = into ? into.subarray(0, n) : Buffer.allocUnsafe(n);
      this.take(n, (c, off) => c.copy(out, off));
      return out;
    }
    if (this.length === 0) {
      await this.fill(1);
      // The next chunk may be exactly the body.
      if (this.length >= n || this.done) return this.length < n ? undefined : this.read(n, into);
    }
    const out = into ? into.subarray(0, n) : Buffer.allocUnsafe(n);
    let off = this.length;
    this.take(this.length, (c, o) => c.copy(out, o));
    while (off < n) {
      await this.fill(1);
      if (!this.length) return undefined;
      const k = Math.min(this.length, n - off);
      this.take(k, (c, o) => c.copy(out, off + o));
      off += k;
    }
    return out;
  }

  /** Write the next n bytes to a new file at `path` as they arrive; false if the stream ends first. */
  async copyTo(n: number, path: string): Promise<boolean> {
    const fd = openSync(path, "w", 0o600);
    try {
      let left = n;
      while (left > 0) {
        await this.fill(1);
        if (!this.length) return false;
        const k = Math.min(left, this.length);
        this.take(k, (c) => {
          for (let off = 0; off < c.length; ) off += writeSync(fd, c, off, c.length - off);
        });
        left -= k;
      }
      return true;
    } finally {
      closeSync(fd);
    }
  }

  /** Drop n bytes without copying them. */
  async skip(n: number): Promise<void> {
    let left = n;
    while (left > 0) {
      await this.fill(1);
      if (!this.length) throw new Error("tar stream truncated");
      const k = Math.min(left, this.length);
      this.take(k, () => {});
      left -= k;
    }
  }

  /** Remove the first n buffered bytes, handing each piece (and its offset) to `use`. */
  private take(n: number, use: (piece: Buffer, offset: number) => void): void {
    let off = 0;
    while (off < n) {
      const c = this.chunks[0] as Buffer;
      const k = Math.min(c.length, n - off);
      use(c.subarray(0, k), off);
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
      off += k;
    }
    this.length -= n;
  }

  async close(): Promise<void> {
    await this.it.return?.();
  }
}

function str(b: Buffer, off: number, len: number): string {
  const s = b.subarray(off, off + len);
  const nul = s.indexOf(0);
  return s.subarray(0, nul < 0 ? len : nul).toString("utf8");
}

/** Octal (with NUL/space padding) or GNU base-256 (high bit of the first byte set) numeric field. */
function num(b: Buffer, off: number, len: number): number {
  const first = b[off] ?? 0;
  if (first & 0x80) {
    let v = first & 0x7f;
    for (let i = 1; i < len; i++) v = v * 256 + (b[off + i] ?? 0);
    return v;
  }
  const s = str(b, off, len).trim();
  return s ? Number.parseInt(s, 8) : 0;
}

function checksumOk(h: Buffer): boolean {
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : (h[i] ?? 0);
  return sum === num(h, 148, 8);
}

/** pax extended header records: "len key=value\n"… */
function parsePax(data: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let off = 0;
  while (off < data.length) {
    const sp = data.indexOf(0x20, off);
    if (sp < 0) break;
    const len = Number.parseInt(data.subarray(off, sp).toString("latin1"), 10);
    if (!len) break;
    const rec = data.subarray(sp + 1, off + len - 1).toString("utf8");
    const eq = rec.indexOf("=");
    if (eq > 0) out.set(rec.slice(0, eq), rec.slice(eq + 1));
    off += len;
  }
  return out;
}

export interface ReadTarOptions {
  /**
   * Whether a regular file's contents are wanted (default: all). An unwanted body is skipped, not read into memory:
   * its entry comes with empty `data` and `skipped` set.
   */
  wantData?: (path: string, size: number) => boolean;
  /**
   * Read every body into one buffer, reused (and grown) from entry to entry: an entry's `data` is valid only until
   * the next entry is asked for. For a consumer that uses each body at once: the kernel package's two passes read
   * ~400 MB of modules, and a fresh buffer per module left malloc's heap fragmented and tens of MB larger.
   */
  reuseBuffer?: boolean;
  /**
   * A file to write a regular file's body to instead of memory (or undefined: read it as usual). The entry then comes
   * with empty `data` and `file` set; its contents are in the file until the next entry is asked for.
   */
  bodyTo?: (path: string, size: number) => string | undefined;
}

/** Entries of a tar stream. Stops at the end-of-archive marker (two zero blocks) or the end of the stream. */
export async function* readTar(
  source: TarSource,
  opts: ReadTarOptions = {},
): AsyncGenerator<TarEntry & { skipped?: boolean; file?: string }> {
  const r = new ByteReader(source);
  let scratch: Buffer | undefined;
  const bodyBuffer = (size: number): Buffer | undefined => {
    if (!opts.reuseBuffer) return undefined;
    if (!scratch || scratch.length < size) scratch = Buffer.allocUnsafe(Math.max(size, 1 << 20));
    return scratch;
  };
  let longName: string | undefined;
  let longLink: string | undefined;
  let pax = new Map<string, string>();
  try {
    for (;;) {
      const h = await r.read(512);
      if (!h) return;
      if (h.every((x) => x === 0)) return;
      if (!checksumOk(h)) throw new Error("tar header checksum mismatch (corrupt or not a tar stream)");
      const typeflag = String.fromCharCode(h[156] ?? 0);
      let size = num(h, 124, 12);
      if (pax.has("size")) size = Number(pax.get("size"));
      const padded = Math.ceil(size / 512) * 512;
      if (typeflag === "L" || typeflag === "K" || typeflag === "x" || typeflag === "g") {
        const body = size ? await r.read(size) : Buffer.alloc(0);
        if (!body) throw new Error("tar stream truncated");
        await r.skip(padded - size);
        if (typeflag === "L") longName = str(body, 0, body.length);
        else if (typeflag === "K") longLink = str(body, 0, body.length);
        else if (typeflag === "x") pax = parsePax(body);
        continue;
      }
      const type = TYPES[typeflag];
      const magic = str(h, 257, 6);
      const prefix = magic.startsWith("ustar") && h[345] !== 0 ? str(h, 345, 155) : "";
      const path = pax.get("path") ?? longName ?? (prefix ? `${prefix}/${str(h, 0, 100)}` : str(h, 0, 100));
      const linkname = pax.get("linkpath") ?? longLink ?? str(h, 157, 100);
      const entry: TarEntry = {
        path,
        type: type ?? "file",
        mode: num(h, 100, 8) & 0o7777,
        uid: pax.has("uid") ? Number(pax.get("uid")) : num(h, 108, 8),
        gid: pax.has("gid") ? Number(pax.get("gid")) : num(h, 116, 8),
        mtime: pax.has("mtime") ? Math.floor(Number(pax.get("mtime"))) : num(h, 136, 12),
        linkname,
        devmajor: num(h, 329, 8),
        devminor: num(h, 337, 8),
        data: Buffer.alloc(0),
      };
      longName = undefined;
      longLink = undefined;
      pax = new Map();
      if (!type) throw new Error(`unsupported tar entry type '${typeflag}' for ${path}`);
      if (entry.type === "file" && opts.wantData && !opts.wantData(path, size)) {
        await r.skip(padded);
        yield { ...entry, skipped: true };
        continue;
      }
      const dest = entry.type === "file" && size ? opts.bodyTo?.(path, size) : undefined;
      if (dest) {
        if (!(await r.copyTo(size, dest))) throw new Error(`tar stream truncated in ${path}`);
        await r.skip(padded - size);
        yield { ...entry, file: dest };
        continue;
      }
      if (entry.type === "file") {
        const body = size ? await r.read(size, bodyBuffer(size)) : Buffer.alloc(0);
        if (!body) throw new Error(`tar stream truncated in ${path}`);
        entry.data = body;
        await r.skip(padded - size);
      } else {
        await r.skip(padded);
      }
      yield entry;
    }
  } finally {
    await r.close();
  }
}

const TYPE_FLAGS: Record<TarType, string> = {
  file: "0",
  hardlink: "1",
  symlink: "2",
  chardev: "3",
  blockdev: "4",
  dir: "5",
  fifo: "6",
};

function header(name: string, typeflag: string, size: number, e: Partial<TarEntry>): Buffer {
  const h = Buffer.alloc(512);
  h.write(name.slice(0, 100), 0, "utf8");
  h.write(`${((e.mode ?? 0o644) & 0o7777).toString(8).padStart(7, "0")}\0`, 100);
  h.write(`${(e.uid ?? 0).toString(8).padStart(7, "0")}\0`, 108);
  h.write(`${(e.gid ?? 0).toString(8).padStart(7, "0")}\0`, 116);
  h.write(`${size.toString(8).padStart(11, "0")}\0`, 124);
  h.write(`${(e.mtime ?? 0).toString(8).padStart(11, "0")}\0`, 136);
  h.write(typeflag, 156);
  h.write((e.linkname ?? "").slice(0, 100), 157);
  h.write("ustar  \0", 257); // GNU magic + version
  h.write(`${(e.devmajor ?? 0).toString(8).padStart(7, "0")}\0`, 329);
  h.write(`${(e.devminor ?? 0).toString(8).padStart(7, "0")}\0`, 337);
  h.write("        ", 148);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
  return h;
}

/** The zero bytes that pad a body of `size` bytes to whole 512-byte blocks. */
export function tarPadding(size: number): Buffer {
  return Buffer.alloc((512 - (size % 512)) % 512);
}

/**
 * The blocks in front of an entry's body (pure): GNU long-name records when needed, then its ustar header; a regular
 * file's `size` bytes and tarPadding(size) follow. For a writer that streams a body instead of holding it.
 */
export function buildTarHead(e: Partial<TarEntry>, size: number): Buffer {
  const blocks: Buffer[] = [];
  const path = e.path ?? "";
  const longRecord = (flag: string, name: string) => {
    const n = Buffer.from(`${name}\0`);
    blocks.push(header("././@LongLink", flag, n.length, {}), n, tarPadding(n.length));
  };
  if (Buffer.byteLength(path) > 100) longRecord("L", path);
  if (Buffer.byteLength(e.linkname ?? "") > 100) longRecord("K", e.linkname ?? "");
  const type = e.type ?? "file";
  blocks.push(header(path, TYPE_FLAGS[type], type === "file" ? size : 0, e));
  return blocks.length === 1 ? (blocks[0] as Buffer) : Buffer.concat(blocks);
}

/** A tar archive from entries (pure; ustar with GNU long names). Used by tests and fixtures. */
export function buildTar(entries: Partial<TarEntry>[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const data = e.data ?? Buffer.alloc(0);
    blocks.push(buildTarHead(e, data.length));
    if ((e.type ?? "file") === "file") blocks.push(data, tarPadding(data.length));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}
