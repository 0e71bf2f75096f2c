// The phase-level cache: what changes the key and what does not, element digests, and the cache entries' life
// (commit, hit, damage detected, pruning).
import {
  chmod,
  link,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  stat,
  symlink,
  truncate,
  utimes,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import t from "tap";
import {
  commitTree,
  digestElement,
  digestHostFiles,
  lookupTree,
  pruneTrees,
  restoreTreeCommand,
  saveTreeCommand,
  type TreeKeyInputs,
  treeCacheKey,
  treeFile,
} from "../../src/cache/tree.js";

const BASE: TreeKeyInputs = {
  arch: "amd64",
  elements: [{ name: "tiny-os", files: [["install.d/10-a", "x", "aa"]] }],
  env: { IMAGE_NAME: "/vmdib/work/out/a", DIB_RELEASE: "bookworm", DIB_DEBUG_TRACE: "0" },
  hostFiles: {},
  driver: "d1",
};

t.test("the key changes with every input that shapes the tree, and only with those", async (t) => {
  const key = treeCacheKey(BASE);
  t.match(key, /^[0-9a-f]{24}$/);
  t.equal(treeCacheKey({ ...BASE }), key, "stable");
  t.equal(treeCacheKey({ ...BASE, env: { ...BASE.env, IMAGE_NAME: "/vmdib/work/out/b" } }), key, "-o elsewhere");
  t.equal(treeCacheKey({ ...BASE, env: { ...BASE.env, DIB_DEBUG_TRACE: "1" } }), key, "-x");
  t.equal(treeCacheKey({ ...BASE, env: { DIB_DEBUG_TRACE: "0", DIB_RELEASE: "bookworm", IMAGE_NAME: "x" } }), key);
  const changed: [string, TreeKeyInputs][] = [
    ["release", { ...BASE, env: { ...BASE.env, DIB_RELEASE: "trixie" } }],
    ["a new variable", { ...BASE, env: { ...BASE.env, DIB_DEV_USER_USERNAME: "dev" } }],
    ["arch", { ...BASE, arch: "arm64" }],
    ["script content", { ...BASE, elements: [{ name: "tiny-os", files: [["install.d/10-a", "x", "ab"]] }] }],
    ["executable bit", { ...BASE, elements: [{ name: "tiny-os", files: [["install.d/10-a", "-", "aa"]] }] }],
    ["element set", { ...BASE, elements: [...BASE.elements, { name: "devuser", files: [] }] }],
    ["host file", { ...BASE, hostFiles: { DIB_DEV_USER_AUTHORIZED_KEYS: "k" } }],
    ["driver", { ...BASE, driver: "d2" }],
  ];
  for (const [what, inputs] of changed) t.not(treeCacheKey(inputs), key, what);
});

t.test("an element's digest covers what runs up to post-root.d, not later phases or docs", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-tree-el-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (const d of ["install.d", "finalise.d", "cleanup.d", "block-device.d", "pre-finalise.d", "static/etc"])
    await mkdir(join(dir, d), { recursive: true });
  await writeFile(join(dir, "install.d", "10-a"), "echo a\n", { mode: 0o755 });
  await writeFile(join(dir, "finalise.d", "10-f"), "echo f\n", { mode: 0o755 });
  await writeFile(join(dir, "cleanup.d", "10-c"), "echo c\n", { mode: 0o755 });
  await writeFile(join(dir, "static", "etc", "motd"), "hello\n");
  await writeFile(join(dir, "README.rst"), "docs\n");
  await writeFile(join(dir, "block-device-default.yaml"), "- local_loop: {name: image0}\n");
  await writeFile(join(dir, "element-deps"), "base\n");
  await symlink("install.d/10-a", join(dir, "linked"));
  const digest = await digestElement(dir);
  t.same(
    digest.map(([p, m]) => `${p} ${m}`),
    ["element-deps -", "install.d/10-a x", "linked x", "static/etc/motd -"],
  );
  const before = JSON.stringify(digest);
  await writeFile(join(dir, "finalise.d", "10-f"), "echo changed\n");
  t.equal(JSON.stringify(await digestElement(dir)), before, "a finalise.d edit keeps the digest");
  await writeFile(join(dir, "install.d", "10-a"), "echo changed\n");
  t.not(JSON.stringify(await digestElement(dir)), before, "an install.d edit changes it");
  await writeFile(join(dir, "install.d", "10-a"), "echo a\n");
  await chmod(join(dir, "install.d", "10-a"), 0o644);
  t.not(JSON.stringify(await digestElement(dir)), before, "so does dropping the executable bit");
});

t.test("host files named by DIB_* settings are hashed by content", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-tree-host-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const keys = join(dir, "keys.pub");
  await writeFile(keys, "ssh-ed25519 AAAA one\n");
  const env = { DIB_DEV_USER_AUTHORIZED_KEYS: keys, DIB_MOUNTPOINTS: "/", OTHER: keys };
  const first = await digestHostFiles(env);
  t.same(Object.keys(first), ["DIB_DEV_USER_AUTHORIZED_KEYS"], "only DIB_* values naming a regular file");
  await writeFile(keys, "ssh-ed25519 AAAA two\n");
  t.not((await digestHostFiles(env)).DIB_DEV_USER_AUTHORIZED_KEYS, first.DIB_DEV_USER_AUTHORIZED_KEYS);
});

t.test("entries: a committed tree is found; a damaged one is removed and missed; old ones are pruned", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-tree-cache-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const key = "0123456789abcdef01234567";
  t.same(await lookupTree(dir, key), { hit: false, reason: "absent" });

  const partial = join(dir, `${treeFile(key)}.partial-${process.pid}`);
  await writeFile(partial, "a tree\n".repeat(1000));
  const meta = await commitTree(dir, key, partial, ["tiny-os"], 5120);
  t.equal(meta.bytes, 7000);
  t.equal(meta.builtKib, 5120, "the tree's size is recorded with it");
  const hit = await lookupTree(dir, key);
  t.ok(hit.hit, "hit after commit");
  t.equal(hit.hit && hit.meta.builtKib, 5120);

  const { builtKib: _, ...older } = meta;
  await writeFile(join(dir, `${key}.json`), JSON.stringify(older));
  t.same(await lookupTree(dir, key), { hit: false, reason: "damaged" }, "an entry without the tree's size: a miss");
  t.same(await readdir(dir), [], "and removed");
  await writeFile(partial, "a tree\n".repeat(1000));
  await commitTree(dir, key, partial, ["tiny-os"], 5120);

  await truncate(join(dir, treeFile(key)), 100);
  t.same(await lookupTree(dir, key), { hit: false, reason: "damaged" }, "a truncated tree is a miss");
  t.same(await readdir(dir), [], "and its entry is gone");

  await writeFile(partial, "a tree\n");
  await commitTree(dir, key, partial, ["tiny-os"], 1);
  await writeFile(join(dir, treeFile(key)), "b tree\n");
  t.same(await lookupTree(dir, key), { hit: false, reason: "damaged" }, "same size, other content: a miss");

  const keys = ["a", "b", "c", "d", "e"].map((c) => c.repeat(24));
  for (const [i, k] of keys.entries()) {
    const p = join(dir, `${treeFile(k)}.partial-${process.pid}`);
    await writeFile(p, k);
    await commitTree(dir, k, p, [], 1);
    const when = new Date(Date.now() - (keys.length - i) * 60_000);
    await utimes(join(dir, `${k}.json`), when, when);
  }
  await writeFile(join(dir, `${treeFile("f".repeat(24))}.partial-999999999`), "left by a dead build");
  await pruneTrees(dir, 3);
  t.same(
    (await readdir(dir)).sort(),
    keys.slice(2).flatMap((k) => [`${k}.json`, `${k}.tar`]),
    "the three most recently used stay; a dead build's partial file goes",
  );
});

t.test(
  "a saved build directory restored with the host's tar: where it was, or its tree into the mounted image",
  async (t) => {
    const dir = await mkdtemp(join(tmpdir(), "vmdib-tree-tar-"));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const saved = join(dir, "saved");
    await mkdir(join(saved, "built", "etc"), { recursive: true });
    await mkdir(join(saved, "built", "boot", "efi"), { recursive: true });
    await mkdir(join(saved, "env.d"), { recursive: true });
    await mkdir(join(saved, "mnt"));
    await writeFile(join(saved, "built", "etc", "os-release"), "tiny\n");
    await link(join(saved, "built", "etc", "os-release"), join(saved, "built", "etc", "hard"));
    await symlink("/built/etc/os-release", join(saved, "built", "etc", "abs"));
    await writeFile(join(saved, "env.d", "10-x.env"), "export X=1\n");
    await chmod(join(saved, "built"), 0o711);
    const file = join(dir, "tree.tar");
    const sh = (cmd: string) => execa("bash", ["-c", `set -eu -o pipefail; ${cmd}`]);
    // --numeric-owner/--xattrs as in the guest; unprivileged here, so owners are not checked.
    await sh(saveTreeCommand(saved, file));

    const build = join(dir, "build");
    await mkdir(join(build, "mnt", "boot", "efi"), { recursive: true });
    await sh(restoreTreeCommand(build, file, "mnt"));
    t.equal(await readFile(join(build, "mnt", "etc", "os-release"), "utf8"), "tiny\n", "the tree is in mnt/");
    t.equal((await stat(join(build, "mnt", "etc", "hard"))).nlink, 2, "hard links kept inside it");
    t.equal(await readlink(join(build, "mnt", "etc", "abs")), "/built/etc/os-release", "link targets untouched");
    t.equal((await stat(join(build, "mnt"))).mode & 0o7777, 0o711, "the tree's root mode on the image's root");
    t.equal(await readFile(join(build, "env.d", "10-x.env"), "utf8"), "export X=1\n", "the rest where it was");
    t.notOk(await lstat(join(build, "built")).catch(() => undefined), "no built/ at all");

    const back = join(dir, "back");
    await mkdir(back);
    await sh(restoreTreeCommand(back, file));
    t.equal(await readFile(join(back, "built", "etc", "os-release"), "utf8"), "tiny\n", "by default into built/");
    t.throws(() => restoreTreeCommand(back, file, "../x"), /not a directory name/);
  },
);
