// Tests src/vm/appliance/packages.ts and closure.ts: Packages parsing, relations, dpkg version order, the closure.
import t from "tap";
import { VmdibError } from "../../src/errors.js";
import { resolveClosure } from "../../src/vm/appliance/closure.js";
import {
  compareVersions,
  PackagesParser,
  parsePackages,
  parseRelations,
  parseReleaseSha256,
  StanzaSelector,
  stripClearsign,
} from "../../src/vm/appliance/packages.js";

function stanza(name: string, fields: Record<string, string> = {}): string {
  const f = { Version: "1.0-1", Architecture: "amd64", Priority: "optional", ...fields };
  const lines = [`Package: ${name}`, ...Object.entries(f).map(([k, v]) => `${k}: ${v}`)];
  lines.push(
    `Filename: pool/main/${name[0]}/${name}/${name}_${f.Version}_${f.Architecture}.deb`,
    "Size: 100",
    `SHA256: ${"ab".repeat(32)}`,
  );
  return `${lines.join("\n")}\n`;
}

const FIXTURE = [
  stanza("app", {
    Depends: "libfoo (>= 2.0), awk, tool-a | tool-b, hook-tool | hook-fallback",
    "Pre-Depends": "libc6",
  }),
  stanza("libfoo", { Version: "2.1-1", Depends: "libc6 (>= 2.36)" }),
  stanza("libfoo", { Version: "1.9-1" }),
  stanza("libc6", { Version: "2.36-9", Description: "GNU C library\n multi-line description\n ." }),
  stanza("gawk", { Provides: "awk" }),
  stanza("mawk", { Provides: "awk", Priority: "required" }),
  stanza("tool-b"),
  stanza("hook-tool", { Depends: "big-thing" }),
  stanza("hook-fallback"),
  stanza("big-thing"),
  stanza("armonly", { Architecture: "arm64" }),
  stanza("data", { Architecture: "all", Depends: "nothing-like-this" }),
  stanza("archdep", { Depends: "libc6 [amd64], armonly [arm64]" }),
  stanza("virt-user", { Depends: "vfoo (>= 3)" }),
  stanza("vprov-old", { Provides: "vfoo (= 2)" }),
  stanza("vprov-new", { Provides: "vfoo (= 3)" }),
].join("\n");

t.test("parsePackages keeps this arch and all, the highest version, and providers", async (t) => {
  const idx = parsePackages(FIXTURE);
  t.equal(idx.packages.get("libfoo")?.version, "2.1-1");
  t.notOk(idx.packages.has("armonly"));
  t.equal(idx.packages.get("data")?.architecture, "all");
  t.same(
    idx.providers.get("awk")?.map((p) => p.pkg.name),
    ["gawk", "mawk"],
  );
  t.equal(idx.providers.get("vfoo")?.find((p) => p.pkg.name === "vprov-new")?.version, "3");
  t.equal(idx.packages.get("app")?.preDepends, "libc6");
});

t.test("parseRelations: alternatives, versions, arch qualifiers and restrictions", async (t) => {
  t.same(parseRelations("a (>= 1.0), b:any | c (<< 2) [amd64], d (> 1)"), [
    [{ name: "a", op: ">=", version: "1.0" }],
    [{ name: "b" }, { name: "c", op: "<<", version: "2", archs: ["amd64"] }],
    [{ name: "d", op: ">=", version: "1" }],
  ]);
  t.same(parseRelations(""), []);
});

t.test("compareVersions follows dpkg", async (t) => {
  const lt: [string, string][] = [
    ["1.0", "1.1"],
    ["1.0~rc1", "1.0"],
    ["1.0-1", "1.0-2"],
    ["1:0.9", "2:0.1"],
    ["0:1.0", "1:0"],
    ["1.0", "1.0a"],
    ["1.0a", "1.0+"],
    ["2.36-9", "2.36-9+deb12u1"],
    ["6.1.0-9", "6.1.0-10"],
    ["1.2.3~", "1.2.3"],
  ];
  for (const [a, b] of lt) {
    t.ok(compareVersions(a, b) < 0, `${a} < ${b}`);
    t.ok(compareVersions(b, a) > 0, `${b} > ${a}`);
  }
  t.equal(compareVersions("1.0-1", "1.0-1"), 0);
  t.equal(compareVersions("0:1.00", "1.0"), 0);
});

/** `text` as byte chunks of `size` (splitting lines, CRLFs and UTF-8 sequences anywhere). */
function chunks(text: string, size: number): Buffer[] {
  const b = Buffer.from(text);
  const out: Buffer[] = [];
  for (let i = 0; i < b.length; i += size) out.push(b.subarray(i, i + size));
  return out;
}

t.test("PackagesParser: chunk boundaries anywhere give the same index; get() is stable", async (t) => {
  const text = `${FIXTURE}\n${stanza("ünïcode-maint", { Maintainer: "Jörg <j@example.org>", Depends: "libc6" })}`;
  const whole = parsePackages(text);
  for (const size of [1, 7, 64]) {
    const parser = new PackagesParser();
    for (const c of chunks(text, size)) parser.push(c);
    const idx = parser.finish();
    t.same([...idx.packages.values()], [...whole.packages.values()], `${size}-byte chunks`);
    t.same([...idx.providers.entries()], [...whole.providers.entries()], `${size}-byte chunks: providers`);
  }
  t.equal(whole.packages.get("libc6"), whole.packages.get("libc6"), "the same object each time");
  t.same(whole.packages.get("libfoo"), {
    name: "libfoo",
    version: "2.1-1",
    architecture: "amd64",
    depends: "libc6 (>= 2.36)",
    preDepends: "",
    provides: "",
    filename: "pool/main/l/libfoo/libfoo_2.1-1_amd64.deb",
    sha256: "ab".repeat(32),
    size: 100,
    essential: false,
    priority: "optional",
  });
  t.equal(whole.packages.size, [...whole.packages.keys()].length);
  t.equal(whole.providers.get("awk")?.[0]?.pkg, whole.packages.get("gawk"));
});

t.test("StanzaSelector: the named stanzas verbatim, in file order, across chunks", async (t) => {
  const text = `\n${FIXTURE}\n\n\n${stanza("ünïcode", { Description: "x\n more" })}`;
  const want = ["libc6", "libfoo", "ünïcode"];
  const expected = text
    .split(/\n\n+/)
    .filter((s) => want.includes(/^Package:\s*(\S+)/m.exec(s)?.[1] ?? ""))
    .map((s) => `${s.trim()}\n\n`)
    .join("");
  t.same(
    [...expected.matchAll(/^Package: (\S+)/gm)].map((m) => m[1]),
    ["libfoo", "libfoo", "libc6", "ünïcode"],
  );
  for (const size of [1, 5, 4096]) {
    const sel = new StanzaSelector(new Set(want));
    for (const c of chunks(text, size)) sel.push(c);
    t.equal(sel.finish(), expected, `${size}-byte chunks`);
  }
});

t.test("resolveClosure: depends, pre-depends, providers by priority, first satisfiable alternative", async (t) => {
  const idx = parsePackages(FIXTURE);
  const c = resolveClosure(idx, ["app"]);
  t.same(
    c.packages.map((p) => p.name),
    ["app", "big-thing", "hook-tool", "libc6", "libfoo", "mawk", "tool-b"],
  );
  t.equal(c.reasons.get("libc6"), "app");
  t.equal(c.reasons.get("app"), "requested");
});

t.test("resolveClosure: exclude satisfies a dependency; arch restrictions; versioned virtuals", async (t) => {
  const idx = parsePackages(FIXTURE);
  const c = resolveClosure(idx, ["app"], { exclude: ["hook-tool"] });
  t.notOk(c.packages.some((p) => p.name === "hook-tool" || p.name === "big-thing"));
  // An excluded package counts as installed: its OR-group is met, no other alternative is dragged in.
  t.notOk(
    c.packages.some((p) => p.name === "hook-fallback"),
    "the group counts as satisfied",
  );
  t.same(
    resolveClosure(idx, ["archdep"]).packages.map((p) => p.name),
    ["archdep", "libc6"],
  );
  t.same(
    resolveClosure(idx, ["virt-user"]).packages.map((p) => p.name),
    ["virt-user", "vprov-new"],
  );
});

t.test("resolveClosure: unknown roots and unsatisfiable deps are errors with the chain", async (t) => {
  const idx = parsePackages(FIXTURE);
  t.throws(() => resolveClosure(idx, ["no-such"]), VmdibError);
  const err = t.throws(() => resolveClosure(idx, ["data"])) as VmdibError;
  t.match(err.message, /nothing-like-this.*needed by data/);
});

t.test("InRelease: clearsign stripped, SHA256 section parsed", async (t) => {
  const inRelease = [
    "-----BEGIN PGP SIGNED MESSAGE-----",
    "Hash: SHA256",
    "",
    "Origin: Debian",
    "Date: Sat, 11 Jul 2026 10:16:37 UTC",
    "MD5Sum:",
    " 0123 10 main/binary-amd64/Packages.xz",
    "SHA256:",
    ` ${"AB".repeat(32)}  8790396 main/binary-amd64/Packages.xz`,
    ` ${"cd".repeat(32)} 50060337 main/binary-amd64/Packages`,
    "- -dash-escaped line",
    "-----BEGIN PGP SIGNATURE-----",
    "",
    "xxx",
    "-----END PGP SIGNATURE-----",
  ].join("\n");
  t.match(stripClearsign(inRelease), /^Origin: Debian/);
  t.match(stripClearsign(inRelease), /\n-dash-escaped line$/);
  const sums = parseReleaseSha256(inRelease);
  t.same(sums.get("main/binary-amd64/Packages.xz"), { sha256: "ab".repeat(32), size: 8790396 });
  t.equal(sums.get("main/binary-amd64/Packages")?.size, 50060337);
});
