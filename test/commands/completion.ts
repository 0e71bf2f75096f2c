// Tests for src/commands/completion.ts: the generated bash script, loaded into a real bash and asked what a person
// pressing Tab would get.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import t from "tap";
import { PACKAGE_ROOT } from "../../src/paths.js";
import { vmdib } from "../helpers/cli.js";

/** COMPREPLY for the words typed so far (the last word is the one being completed). */
async function complete(script: string, words: string[], env: NodeJS.ProcessEnv = {}): Promise<string[]> {
  const line = words.map((w) => `'${w}'`).join(" ");
  const r = await execa(
    "bash",
    [
      "-c",
      `source "$1"; COMP_WORDS=(${line}); COMP_CWORD=${words.length - 1}; _vmdib; printf '%s\\n' "\${COMPREPLY[@]}"`,
      "-",
      script,
    ],
    { env: { ...env, PATH: `${join(PACKAGE_ROOT, "bin")}:${process.env.PATH}` } },
  );
  return r.stdout.split("\n").filter(Boolean);
}

t.test("bash: commands, build flags, -t items, --accel values, element names", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-completion-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const out = await vmdib(["completion", "bash"]);
  t.equal(out.code, 0);
  const script = join(dir, "vmdib.bash");
  await writeFile(script, out.stdout);

  t.same(await complete(script, ["vmdib", "bu"]), ["build"]);
  t.same(await complete(script, ["vmdib", "d"]), ["doctor"]);
  t.same(await complete(script, ["vmdib", "build", "--image-"]), [
    "--image-size",
    "--image-extra-size",
    "--image-cache",
  ]);
  t.same(await complete(script, ["vmdib", "build", "-t", "q"]), ["qcow2", "qed"]);
  t.same(await complete(script, ["vmdib", "build", "-t", "qcow2,v"]), [
    "qcow2,vhd",
    "qcow2,vhdx",
    "qcow2,vmdk",
    "qcow2,vdi",
  ]);
  t.same(await complete(script, ["vmdib", "build", "--accel", ""]), ["kvm", "hvf", "tcg"]);
  t.same(await complete(script, ["vmdib", "build", "vm", "debian-m"]), ["debian-minimal"], "vmdib's own elements");
  const fixtures = join(PACKAGE_ROOT, "test", "fixtures", "e2e-elements");
  t.same(
    await complete(script, ["vmdib", "build", "tiny-o"], { ELEMENTS_PATH: fixtures }),
    ["tiny-os"],
    "ELEMENTS_PATH",
  );
});

t.test("bash: the other commands' flags come from their option tables", async (t) => {
  const dir = await mkdtemp(join(tmpdir(), "vmdib-completion-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const script = join(dir, "vmdib.bash");
  await writeFile(script, (await vmdib(["completion", "bash"])).stdout);
  t.same(await complete(script, ["vmdib", "run", "--s"]), ["--share"]);
  t.same(await complete(script, ["vmdib", "shell", "--o"]), ["--offline"]);
  t.same(await complete(script, ["vmdib", "boot", "--s"]), ["--snapshot"]);
  t.same(await complete(script, ["vmdib", "test", "--s"]), ["--ssh-key"], "test has no --snapshot");
  t.same(await complete(script, ["vmdib", "test", "--accel", "t"]), ["tcg"]);
  t.same(await complete(script, ["vmdib", "doctor", "--j"]), ["--json"]);
});

t.test("zsh gets the same function through bashcompinit; an unknown shell is a usage error", async (t) => {
  const zsh = await vmdib(["completion", "zsh"]);
  t.match(zsh.stdout, /^autoload -U \+X bashcompinit && bashcompinit$/m);
  t.match(zsh.stdout, /complete -o default -F _vmdib vmdib/);
  const bad = await vmdib(["completion", "fish"]);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /unknown shell 'fish'/);
});
