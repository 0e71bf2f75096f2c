// The appliance's root filesystem as a cpio stream: package tar entries → merged-/usr, root-owned, deduplicated cpio
// entries (docs and locales dropped), plus what maintainer scripts would have made (users, alternatives, configs).
import { posix } from "node:path";
import { type CpioEntry, type CpioWriter, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFREG } from "./cpio.js";
import type { TarEntry } from "./tar.js";

/** Top-level directories that Debian's merged-/usr layout turns into symlinks into /usr. */
export const MERGED_USR_DIRS = ["bin", "sbin", "lib", "lib64"] as const;

/** Trees nobody reads in an appliance; dropping them keeps the initramfs (and so the boot) small. */
export const DROPPED_PREFIXES = [
  "usr/share/doc/",
  "usr/share/doc-base/",
  "usr/share/man/",
  "usr/share/info/",
  "usr/share/locale/",
  "usr/share/lintian/",
  "usr/share/linda/",
  "usr/share/bug/",
  "usr/share/bash-completion/",
  "usr/share/zsh/",
  "usr/share/fish/",
  "usr/share/gtk-doc/",
  "usr/share/help/",
  "usr/share/menu/",
  "usr/share/pixmaps/",
  "usr/share/icons/",
  "usr/share/applications/",
  "usr/share/common-licenses/",
];

/** "./bin/ls", "/bin/ls", "bin/ls/" → "usr/bin/ls" (after merged-/usr); "" for the root directory. */
export function normalizePath(p: string): string {
  const clean = posix.normalize(`/${p}`).replace(/^\/+/, "").replace(/\/+$/, "");
  return clean === "." ? "" : clean;
}

export function mergeUsr(p: string): string {
  const first = p.split("/", 1)[0] ?? "";
  return (MERGED_USR_DIRS as readonly string[]).includes(first) ? `usr/${p}` : p;
}

/** Is `p` left out? Rules ending in "/" drop a whole tree (the directory included); others one exact path. */
export function isDropped(p: string, extra: readonly string[] = []): boolean {
  const withSlash = `${p}/`;
  const hit = (d: string) => (d.endsWith("/") ? withSlash.startsWith(d) : p === d);
  return DROPPED_PREFIXES.some(hit) || extra.some(hit);
}

/** One `update-alternatives --install` found in a maintainer script. */
export interface Alternative {
  link: string;
  name: string;
  path: string;
  priority: number;
  slaves: { link: string; name: string; path: string }[];
}

/** The literal `update-alternatives --install` calls of a postinst (calls using shell variables are skipped). */
export function parseAlternatives(script: string): Alternative[] {
  const text = script.replace(/\\\n/g, " ");
  const out: Alternative[] = [];
  for (const line of text.split("\n")) {
    const m = /update-alternatives\s+(?:--quiet\s+)?--install\s+(\S+)\s+(\S+)\s+(\S+)\s+(\d+)(.*)$/.exec(line);
    if (!m) continue;
    const [, link, name, path, prio, rest] = m as unknown as [string, string, string, string, string, string];
    if ([link, name, path].some((x) => x.includes("$"))) continue;
    const slaves: Alternative["slaves"] = [];
    const re = /--slave\s+(\S+)\s+(\S+)\s+(\S+)/g;
    for (let s = re.exec(rest); s; s = re.exec(rest)) {
      const [, sl, sn, sp] = s as unknown as [string, string, string, string];
      if (![sl, sn, sp].some((x) => x.includes("$"))) slaves.push({ link: sl, name: sn, path: sp });
    }
    out.push({ link, name, path, priority: Number(prio), slaves });
  }
  return out;
}

type Kind = "dir" | "file" | "symlink" | "other";

/** Files whose contents the synthesis step needs after all packages are in (read, not re-extracted). */
const CAPTURE = new Set([
  "usr/share/base-passwd/passwd.master",
  "usr/share/base-passwd/group.master",
  "usr/share/openssh/sshd_config",
  "usr/share/libc-bin/nsswitch.conf",
]);

/**
 * Writes a root filesystem into a cpio archive. Every entry is owned by root (uid/gid 0), like a dpkg install by
 * root would make it; modes incl. setuid bits come from the packages. The first package to ship a path wins.
 */
export class RootfsWriter {
  readonly kinds = new Map<string, Kind>();
  readonly captured = new Map<string, Buffer>();
  readonly alternatives: Alternative[] = [];
  /** Paths that two packages both shipped (the later one was skipped). */
  readonly conflicts: string[] = [];
  private readonly caCerts: Buffer[] = [];

  constructor(
    private readonly cpio: CpioWriter,
    /** mtime for synthesized entries (reproducible builds: the index date, not "now"). */
    private readonly mtime: number,
    /** Path prefixes to leave out on top of DROPPED_PREFIXES (from appliance.yaml `drop`). */
    private readonly drop: readonly string[] = [],
  ) {}

  /** The skeleton: /, /usr, merged-/usr symlinks, and the mount points an init needs. */
  addSkeleton(): void {
    this.addDir("", 0o755);
    this.addDir("usr", 0o755);
    for (const d of MERGED_USR_DIRS) {
      this.addDir(`usr/${d}`, 0o755);
      this.addSymlink(d, `usr/${d}`);
    }
    for (const d of ["dev", "proc", "sys", "run", "mnt", "etc", "var", "var/log", "var/lib", "home", "srv", "opt"]) {
      this.addDir(d, 0o755);
    }
    this.addDir("root", 0o700);
    this.addDir("tmp", 0o1777);
    this.addDir("var/tmp", 0o1777);
    this.addSymlink("var/run", "/run");
    this.addSymlink("var/lock", "/run/lock");
    // The kernel opens /dev/console for init's stdio before anything mounts devtmpfs.
    this.add({ name: "dev/console", mode: S_IFCHR | 0o600, rdevmajor: 5, rdevminor: 1 });
    this.add({ name: "dev/null", mode: S_IFCHR | 0o666, rdevmajor: 1, rdevminor: 3 });
  }

  has(path: string): boolean {
    return this.kinds.has(path);
  }

  kindOf(path: string): Kind | undefined {
    return this.kinds.get(path);
  }

  addDir(path: string, mode: number): void {
    this.add({ name: path, mode: S_IFDIR | (mode & 0o7777) });
  }

  addFile(path: string, data: Buffer | string, mode = 0o644): void {
    this.add({ name: path, mode: S_IFREG | (mode & 0o7777), data: Buffer.from(data) });
  }

  addSymlink(path: string, target: string): void {
    this.add({ name: path, mode: S_IFLNK | 0o777, data: Buffer.from(target) });
  }

  /** Low-level add: creates missing parent directories, skips duplicates, records kinds. */
  add(e: CpioEntry): boolean {
    const name = e.name === "" ? "." : e.name;
    const key = e.name;
    const kind = kindOfMode(e.mode);
    const prev = this.kinds.get(key);
    if (prev !== undefined) {
      if (!(prev === "dir" && kind === "dir")) this.conflicts.push(key);
      return false;
    }
    if (key !== "") this.ensureParents(key);
    this.kinds.set(key, kind);
    this.cpio.add({ uid: 0, gid: 0, mtime: this.mtime, ...e, name });
    return true;
  }

  private ensureParents(path: string): void {
    const parts = path.split("/");
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join("/");
      const k = this.kinds.get(dir);
      // A parent that is a symlink (e.g. var/run) is fine: the kernel's unpacker follows intermediate symlinks.
      if (k === undefined) this.addDir(dir, 0o755);
    }
  }

  /**
   * One package's data.tar entries. Hard links are grouped so every member shares one inode, with the data
   * carried by the last member (what both GNU cpio and the kernel's unpacker accept).
   */
  addPackage(entries: TarEntry[], postinst: string | undefined): void {
    if (postinst) this.alternatives.push(...parseAlternatives(postinst));
    type Item = { path: string; e: TarEntry };
    const items: Item[] = [];
    const fileByOrigPath = new Map<string, Item>();
    for (const e of entries) {
      const orig = normalizePath(e.path);
      if (orig === "" && e.type === "dir") continue;
      const path = mergeUsr(orig);
      if (isDropped(path, this.drop)) {
        if (e.type === "file") fileByOrigPath.set(orig, { path, e }); // a kept hard link may still need its data
        continue;
      }
      if (e.type === "dir" && (MERGED_USR_DIRS as readonly string[]).includes(orig)) continue;
      if (e.type === "symlink") {
        const target = rewriteSymlink(orig, path, e.linkname);
        if (target === undefined) continue; // would point at itself after the /usr merge (a compat link)
        items.push({ path, e: { ...e, linkname: target } });
        continue;
      }
      const item = { path, e };
      if (e.type === "file") fileByOrigPath.set(orig, item);
      items.push(item);
    }
    // Hard link groups: target file → members (the file itself if kept, then each kept link).
    const groups = new Map<string, Item[]>();
    for (const it of items) {
      if (it.e.type !== "hardlink") continue;
      const targetOrig = normalizePath(it.e.linkname);
      const group = groups.get(targetOrig) ?? [];
      group.push(it);
      groups.set(targetOrig, group);
    }
    const inGroup = new Map<Item, { ino: number; members: Item[]; data: Buffer; mode: number }>();
    for (const [targetOrig, links] of groups) {
      const target = fileByOrigPath.get(targetOrig);
      if (!target) continue;
      const keptTarget = items.includes(target);
      const members = keptTarget ? [target, ...links] : links;
      const info = { ino: this.cpio.allocIno(), members, data: target.e.data, mode: target.e.mode };
      for (const m of members) inGroup.set(m, info);
    }
    for (const it of items) {
      const g = inGroup.get(it);
      if (g) {
        const last = g.members[g.members.length - 1] === it;
        this.add({
          name: it.path,
          mode: S_IFREG | g.mode,
          ino: g.ino,
          nlink: g.members.length,
          data: last ? g.data : Buffer.alloc(0),
        });
        if (last) this.capture(it.path, g.data);
        continue;
      }
      const e = it.e;
      switch (e.type) {
        case "dir":
          this.addDir(it.path, e.mode);
          break;
        case "file":
          this.add({ name: it.path, mode: S_IFREG | e.mode, mtime: e.mtime, data: e.data });
          this.capture(it.path, e.data);
          break;
        case "symlink":
          this.add({ name: it.path, mode: S_IFLNK | 0o777, mtime: e.mtime, data: Buffer.from(e.linkname) });
          break;
        case "chardev":
        case "blockdev":
          this.add({
            name: it.path,
            mode: (e.type === "chardev" ? S_IFCHR : S_IFBLK) | e.mode,
            rdevmajor: e.devmajor,
            rdevminor: e.devminor,
          });
          break;
        case "fifo":
          this.add({ name: it.path, mode: S_IFIFO | e.mode });
          break;
        case "hardlink":
          // Its target was not in this package: dpkg would fail too; skip rather than make a dangling entry.
          break;
      }
    }
  }

  private capture(path: string, data: Buffer): void {
    if (CAPTURE.has(path)) this.captured.set(path, data);
    if (path.startsWith("usr/share/ca-certificates/") && path.endsWith(".crt")) this.caCerts.push(data);
  }

  /** What maintainer scripts and debootstrap would have left behind, for the parts the appliance relies on. */
  synthesize(opts: { hostname: string }): void {
    const passwdMaster = this.captured.get("usr/share/base-passwd/passwd.master")?.toString() ?? FALLBACK_PASSWD;
    const groupMaster = this.captured.get("usr/share/base-passwd/group.master")?.toString() ?? FALLBACK_GROUP;
    // OpenSSH's privilege separation user (created by openssh-server's postinst with adduser).
    const passwd = `${passwdMaster.trimEnd()}\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n`;
    const group = groupMaster.trimEnd().includes("\nkvm:") ? groupMaster : `${groupMaster.trimEnd()}\nkvm:x:101:\n`;
    this.addEtc("etc/passwd", passwd, 0o644);
    this.addEtc("etc/group", group, 0o644);
    // "*" (not "!"): a locked password, but OpenSSH still allows key login for the account.
    const shadow = passwd
      .split("\n")
      .filter(Boolean)
      .map((l) => `${l.split(":")[0]}:*:20000:0:99999:7:::\n`)
      .join("");
    const gshadow = group
      .split("\n")
      .filter(Boolean)
      .map((l) => `${l.split(":")[0]}:*::\n`)
      .join("");
    this.addEtc("etc/shadow", shadow, 0o640, 42);
    this.addEtc("etc/gshadow", gshadow, 0o640, 42);
    this.addEtc("etc/hostname", `${opts.hostname}\n`, 0o644);
    this.addEtc(
      "etc/hosts",
      `127.0.0.1\tlocalhost\n127.0.1.1\t${opts.hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n`,
    );
    this.addEtc("etc/fstab", "# the appliance's init mounts what it needs\n");
    this.addEtc("etc/resolv.conf", "nameserver 10.0.2.3\n"); // QEMU user networking's DNS forwarder
    if (!this.has("etc/mtab")) this.addSymlink("etc/mtab", "../proc/self/mounts");
    const nss = this.captured.get("usr/share/libc-bin/nsswitch.conf");
    this.addEtc("etc/nsswitch.conf", nss ?? "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n");
    const sshd = this.captured.get("usr/share/openssh/sshd_config");
    if (sshd) this.addEtc("etc/ssh/sshd_config", sshd);
    if (this.caCerts.length && !this.has("etc/ssl/certs/ca-certificates.crt")) {
      this.addFile("etc/ssl/certs/ca-certificates.crt", Buffer.concat(this.caCerts));
    }
    if (!this.has("usr/bin/sh") && this.has("usr/bin/dash")) this.addSymlink("usr/bin/sh", "dash");
    this.applyAlternatives();
  }

  private addEtc(path: string, data: Buffer | string, mode = 0o644, gid = 0): void {
    if (this.has(path)) return;
    this.add({ name: path, mode: S_IFREG | mode, gid, data: Buffer.from(data) });
  }

  /** The highest-priority alternative per name whose target exists, as /etc/alternatives links (like dpkg's auto mode). */
  private applyAlternatives(): void {
    const best = new Map<string, Alternative>();
    for (const a of this.alternatives) {
      if (!this.has(mergeUsr(normalizePath(a.path)))) continue;
      const cur = best.get(a.name);
      if (!cur || a.priority > cur.priority) best.set(a.name, a);
    }
    const link = (linkPath: string, name: string, path: string) => {
      const l = mergeUsr(normalizePath(linkPath));
      if (this.has(l) || !this.has(mergeUsr(normalizePath(path)))) return;
      this.addSymlink(`etc/alternatives/${name}`, path);
      this.addSymlink(l, `/etc/alternatives/${name}`);
    };
    for (const a of [...best.values()].sort((x, y) => x.name.localeCompare(y.name))) {
      link(a.link, a.name, a.path);
      for (const s of a.slaves) link(s.link, s.name, s.path);
    }
  }
}

/**
 * A symlink's target after its own path moved under /usr: relative targets are re-expressed from the new place.
 * Returns undefined when the link would point at itself (e.g. /bin/foo → /usr/bin/foo becoming usr/bin/foo).
 */
export function rewriteSymlink(origPath: string, newPath: string, target: string): string | undefined {
  const absolute = target.startsWith("/")
    ? normalizePath(target)
    : normalizePath(posix.join(posix.dirname(`/${origPath}`), target));
  if (mergeUsr(absolute) === newPath) return undefined;
  if (origPath === newPath || target.startsWith("/")) return target;
  const rel = posix.relative(posix.dirname(`/${newPath}`), `/${mergeUsr(absolute)}`);
  return rel || ".";
}

function kindOfMode(mode: number): Kind {
  switch (mode & 0o170000) {
    case S_IFDIR:
      return "dir";
    case S_IFREG:
      return "file";
    case S_IFLNK:
      return "symlink";
    default:
      return "other";
  }
}

const FALLBACK_PASSWD = `root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:x:2:2:bin:/bin:/usr/sbin/nologin
sys:x:3:3:sys:/dev:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
`;

const FALLBACK_GROUP = `root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
kmem:x:15:
shadow:x:42:
utmp:x:43:
nogroup:x:65534:
`;
