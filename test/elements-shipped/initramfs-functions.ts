// Tests the shell functions the dpkg element's post-install.d/99-update-initramfs appends to initramfs-tools'
// hook-functions for its mkinitramfs run: `realpath`, `readlink` and `mkdir` that answer without a process must
// answer exactly as coreutils does (output and exit status, and the same directories made), for every form they
// take and every path, symbolic links of all kinds included. Random paths over a small tree, against the real
// commands, in dash (the shell mkinitramfs and its hooks run in).
import { spawnSync } from "node:child_process";
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import t from "tap";
import { BUILTIN_ELEMENTS_DIR } from "../../src/paths.js";

const SCRIPT = readFileSync(join(BUILTIN_ELEMENTS_DIR, "dpkg/post-install.d/99-update-initramfs"), "utf8");

/** The functions as the script appends them (its FAST here-document), and its links at / as this host has them. */
function functions(): string {
  const m = /<<'FAST'\n([\s\S]*?)\nFAST\n/.exec(SCRIPT);
  if (!m) throw new Error("no FAST here-document in 99-update-initramfs");
  const links = readdirSync("/")
    .map((name) => `/${name}`)
    .filter((p) => {
      try {
        return readlinkSync(p) !== "" && /^\/[A-Za-z0-9._-]+$/.test(p);
      } catch {
        return false;
      }
    })
    .map((p) => {
      const r = spawnSync("readlink", ["-f", p], { encoding: "utf8" });
      return r.status === 0 ? `  ${p}) _vmdib_r=${r.stdout.trim()} ;;\n` : "";
    });
  return `${m[1]}\n_vmdib_links() {\n  case $1 in\n${links.join("")}  *) return 1 ;;\n  esac\n}\n`;
}

/** A small tree with every kind of symbolic link: relative, absolute, to a directory, dangling, a loop, a chain. */
function makeTree(root: string): void {
  rmSync(root, { recursive: true, force: true });
  mkdirSync(join(root, "a/b/c"), { recursive: true });
  mkdirSync(join(root, "d"));
  writeFileSync(join(root, "a/f"), "");
  writeFileSync(join(root, "a/b/g"), "");
  symlinkSync("b", join(root, "a/l1"));
  symlinkSync(join(root, "a/f"), join(root, "a/l2"));
  symlinkSync("nowhere", join(root, "a/dang"));
  symlinkSync("loop", join(root, "a/loop"));
  symlinkSync("../../d", join(root, "a/b/up"));
  symlinkSync("l1", join(root, "a/chain"));
  symlinkSync("a", join(root, "la"));
}

/** A seeded generator, so that a failure can be replayed. */
function random(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % n;
  };
}

const COMPONENTS = ["", ".", "..", "a", "b", "c", "d", "f", "g", "l1", "l2", "dang", "loop", "up", "chain", "la", "x"];

function paths(base: string, prefixes: readonly string[], count: number, seed: number): string[] {
  const r = random(seed);
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    let p = prefixes[r(prefixes.length)] as string;
    for (let n = r(6); n > 0; n--) p += `${"/".repeat(r(4) === 0 ? 2 : 1)}${COMPONENTS[r(COMPONENTS.length)]}`;
    if (r(5) === 0) p += "/";
    out.push(p.replaceAll("@", base));
  }
  return out;
}

/** Runs `CMD... "$p"` for each path in dash, with or without the functions: one output+status record per path. */
function answers(defs: string, cmd: string, ps: readonly string[]): string[] {
  const script = `${defs}\nfor p in "$@"; do ${cmd} "$p" 2>&1; echo "rc=$?"; done\n`;
  const r = spawnSync("dash", ["-c", script, "dash", ...ps], { encoding: "utf8", maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`dash failed: ${r.stderr}`);
  return r.stdout.split(/(?<=rc=\d+\n)/);
}

const dash = spawnSync("dash", ["-c", "true"]);
t.test(
  "the functions answer as realpath, readlink and mkdir do",
  { skip: dash.status !== 0 && "no dash" },
  async (t) => {
    const base = mkdtempSync(join(tmpdir(), "vmdib-initramfs-fns-"));
    t.teardown(() => rmSync(base, { recursive: true, force: true }));
    const tree = join(base, "t");
    makeTree(tree);
    const defs = functions();
    t.match(defs, /^realpath\(\) \{/m);

    // Every form the functions answer, and some they hand to the real command; paths in the tree and at / (its
    // usr-merge links answered from the table), relative ones, glob characters and backslashes.
    const ps = [
      ...paths(tree, ["@", "@/", "/", "//", "/bin", "/usr", "", "rel", "@/a/*", "@/a/[b]", "@/a\\b"], 800, 7),
      "",
      "/",
      "/bin",
      "/bin/",
      "//bin//sh",
    ];
    const forms = ["realpath -ms", "realpath -sm", "realpath -s", "readlink -f", "readlink", "realpath -m"];
    for (const form of forms) {
      const want = answers("", form, ps);
      const got = answers(defs, form, ps);
      const differ = ps.filter((_, i) => got[i] !== want[i]);
      t.same(differ, [], `${form}: the same output and status for all ${ps.length} paths`);
    }

    // mkdir -p: the same status and the same directories made (paths with ".." stay out: they could leave the tree).
    const made = (defs: string, p: string): string => {
      makeTree(tree);
      const r = spawnSync("dash", ["-c", `${defs}\nmkdir -p "$1" 2>&1; echo "rc=$?"`, "dash", p], { encoding: "utf8" });
      const listing = spawnSync("find", [tree, "-printf", "%p %y\n"], { encoding: "utf8" }).stdout;
      return `${r.stdout}${listing.split("\n").sort().join("\n")}`;
    };
    const dirs = paths(tree, ["@"], 200, 11).filter((p) => !p.split("/").includes(".."));
    const differ = dirs.filter((p) => made(defs, p) !== made("", p));
    t.same(differ, [], `mkdir -p: the same status and tree for all ${dirs.length} paths`);
  },
);
