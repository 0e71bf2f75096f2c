// Tests for src/commands/elements.ts: `vmdib elements` output, flags, and errors rendered by the CLI with exit 2.
import { join } from "node:path";
import t from "tap";
import { parseElementsArgs } from "../../src/commands/elements.js";
import { PACKAGE_ROOT } from "../../src/paths.js";
import { vmdib as run } from "../helpers/cli.js";

const FIXTURES = join(PACKAGE_ROOT, "test", "fixtures", "elements");
const A = join(FIXTURES, "path-a");
const B = join(FIXTURES, "path-b");

const vmdib = (args: string[], env: NodeJS.ProcessEnv = {}, cwd = FIXTURES) => run(["elements", ...args], env, cwd);

t.test("parseElementsArgs", async (t) => {
  t.same(parseElementsArgs(["-n", "vm", "--env", "-a", "arm64", "x"]), {
    help: false,
    skipBase: true,
    env: true,
    arch: "arm64",
    elements: ["vm", "x"],
  });
  t.same(parseElementsArgs(["-aarm64", "--", "-n"]).elements, ["-n"], "-- ends options");
  t.equal(parseElementsArgs(["-aarm64"]).arch, "arm64");
  t.throws(() => parseElementsArgs(["--bogus"]), { name: "UsageError", message: /unknown option '--bogus'/ });
  t.throws(() => parseElementsArgs(["-a"]), { name: "UsageError", message: /-a needs/ });
});

t.test("prints the resolved set, names separated by spaces, with base and the default block device", async (t) => {
  const r = await vmdib(["vm", "os-b"], { ELEMENTS_PATH: `${A}:${B}` });
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, "base block-device-mbr bootloader dep-b os-b vm\n");
  // (vmdib's own elements/ may hold base, vm, ... that path-b shadows: those warnings are expected)
  t.notMatch(r.stderr, /'shared'/, "path-a's 'shared' overrides path-b's, but the set does not use it");
  const shared = await vmdib(["-n", "shared", "os-b"], { ELEMENTS_PATH: `${A}:${B}` });
  t.equal(shared.stdout, "os-b shared\n");
  t.equal(shared.stderr, `vmdib: warning: element 'shared' at ${join(A, "shared")} overrides ${join(B, "shared")}\n`);
});

t.test("-n, -a and --env", async (t) => {
  const n = await vmdib(["-n", "vm", "os-b"], { ELEMENTS_PATH: B });
  t.equal(n.stdout, "block-device-mbr bootloader os-b vm\n");
  const arm = await vmdib(["-n", "-a", "arm64", "vm", "os-b"], { ELEMENTS_PATH: B });
  t.equal(arm.stdout, "block-device-efi bootloader os-b vm\n");
  const armEnv = await vmdib(["-n", "vm", "os-b"], { ELEMENTS_PATH: B, ARCH: "aarch64" });
  t.equal(armEnv.stdout, "block-device-efi bootloader os-b vm\n", "ARCH from the environment");
  const env = await vmdib(["--env", "-n", "os-b"], { ELEMENTS_PATH: B });
  t.equal(
    env.stdout,
    [
      "export IMAGE_ELEMENT='os-b'",
      `export IMAGE_ELEMENT_YAML='os-b: ${join(B, "os-b")}`,
      "'",
      "function get_image_element_array {",
      `  echo "[os-b]=${join(B, "os-b")} "`,
      "};",
      "export -f get_image_element_array;",
      "",
    ].join("\n"),
  );
});

t.test("relative ELEMENTS_PATH entries are taken from the working directory", async (t) => {
  const r = await vmdib(["-n", "os-b"], { ELEMENTS_PATH: "path-b" }, FIXTURES);
  t.equal(r.stdout, "os-b\n");
});

t.test("bad input exits 2 with one message and a hint, no stack", async (t) => {
  const cases: [string, string[], NodeJS.ProcessEnv, RegExp][] = [
    ["unknown element", ["os-b", "nope"], { ELEMENTS_PATH: B }, /element 'nope' not found/],
    [
      "two operating systems",
      ["os-a", "os-b"],
      { ELEMENTS_PATH: `${A}:${B}` },
      /'operating-system' is provided by both/,
    ],
    ["provided twice", ["os-b", "vm", "block-device-gpt", "block-device-efi"], { ELEMENTS_PATH: B }, /'block-device'/],
    ["no operating system", ["-n", "dep-b"], { ELEMENTS_PATH: B }, /no operating-system element/],
    ["duplicate hooks", ["-n", "os-b", "hooks-a", "hooks-dup"], { ELEMENTS_PATH: `${A}:${B}` }, /duplicate hook/],
    ["not a directory", ["os-b"], { ELEMENTS_PATH: join(FIXTURES, "not-a-dir") }, /is not a directory/],
    [
      "missing directory",
      ["os-b"],
      { ELEMENTS_PATH: "/nonexistent/elements" },
      /'\/nonexistent\/elements' does not exist/,
    ],
    ["no elements", [], {}, /no elements given/],
    ["unknown option", ["--frobnicate", "os-b"], {}, /unknown option/],
  ];
  for (const [what, args, env, message] of cases) {
    const r = await vmdib(args, env);
    t.equal(r.code, 2, `${what}: exit 2`);
    t.equal(r.stdout, "", `${what}: nothing on stdout`);
    t.match(r.stderr, message, what);
    t.match(r.stderr, /^vmdib: error: /, `${what}: one error line first`);
    t.match(r.stderr, /\n {2}hint: /, `${what}: a hint`);
    t.notMatch(r.stderr, /\n\s+at /, `${what}: no stack trace`);
  }
});

t.test("--help", async (t) => {
  const r = await vmdib(["--help"]);
  t.equal(r.code, 0);
  t.match(r.stdout, /usage: vmdib elements/);
  t.match(r.stdout, /ELEMENTS_PATH/);
});
