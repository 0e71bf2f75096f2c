// Two `vmdib build`s by the same user at the same time, sharing one cache (appliance, tree cache, locks): both
// succeed and each image holds what its own build wrote (a different DIB_* value each).
import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import t from "tap";
import { PACKAGE_ROOT } from "../../src/paths.js";

const VMDIB = join(PACKAGE_ROOT, "bin", "vmdib");
const ELEMENTS = join(PACKAGE_ROOT, "test", "fixtures", "e2e-elements");

t.test("two builds at once share the caches and both produce their own correct image", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-e2e-concurrent-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // Fresh values on every run: a tree cache hit from an earlier run would skip the scripts whose output is checked.
  const nonce = randomUUID().slice(0, 8);
  const build = (name: string) =>
    execa(VMDIB, ["build", "-n", "-o", join(dir, name, "tiny"), "-t", "tar", "tiny-os", "tiny-hostile"], {
      cwd: dir,
      // Same user, same cache directory; the value differs so the tree cache cannot hand one build the other's tree.
      env: {
        ELEMENTS_PATH: ELEMENTS,
        DIB_HOSTILE: `build ${name} ${nonce}`,
        DIB_HOSTILE_LOG: `hello from ${name} ${nonce}`,
      },
      reject: false,
      all: true,
    });
  const t0 = Date.now();
  const [a, b] = await Promise.all([build("a"), build("b")]);
  t.comment(`both done in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  for (const [name, run] of [
    ["a", a],
    ["b", b],
  ] as const) {
    t.equal(run.exitCode, 0, `${name}: ${run.all?.split("\n").slice(-20).join("\n")}`);
    if (run.exitCode !== 0) continue;
    const stored = (await execa("tar", ["xOf", join(dir, name, "tiny.tar"), "./etc/vmdib-hostile"])).stdout;
    t.equal(stored, `build ${name} ${nonce}`, `${name}: its own value in its own image`);
    t.match(run.stdout, new RegExp(`hello from ${name} ${nonce}`), `${name}: its own script output`);
    t.notMatch(run.stdout, new RegExp(`hello from ${name === "a" ? "b" : "a"}`), `${name}: not the other's`);
  }
});
