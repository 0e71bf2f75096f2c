// Tests for src/elements/resolve.ts: disk-image-create's additions, DIB's expansion rules and errors, env rendering.
import t from "tap";
import type { ElementInfo } from "../../src/elements/discover.js";
import {
  addDefaultElements,
  ElementError,
  expandElements,
  imageElementVars,
  renderElementEnv,
  resolveElements,
} from "../../src/elements/resolve.js";

function el(name: string, deps: string[] = [], provides: string[] = []): ElementInfo {
  return { name, path: `/e/${name}`, searchDir: "/e", deps, provides };
}

function tree(...elements: ElementInfo[]): Map<string, ElementInfo> {
  return new Map(elements.map((e) => [e.name, e]));
}

const SEARCH = ["/first", "/e"];

/** A small DIB-like world: two OSes, vm needing a virtual block-device, base. */
const WORLD = tree(
  el("base", ["pkg-map", "install-types"]),
  el("pkg-map"),
  el("install-types"),
  el("debian-minimal", ["debootstrap", "pkg-map"], ["operating-system"]),
  el("debootstrap", ["dpkg"]),
  el("dpkg", ["pkg-map"]),
  el("ubuntu-minimal", ["debootstrap"], ["operating-system"]),
  el("vm", ["block-device", "bootloader"]),
  el("bootloader"),
  el("block-device-mbr", [], ["block-device"]),
  el("block-device-gpt", [], ["block-device"]),
  el("block-device-efi", [], ["block-device"]),
  el("zipl", ["pkg-map"], ["bootloader"]),
  el("needs-ghost", ["ghost"]),
);

const names = (elements: readonly ElementInfo[]) => elements.map((e) => e.name);

/** tap's subtest object (the type of `t` inside t.test). */
type Test = Parameters<Parameters<typeof t.test>[0]>[0];

/** Run fn, expect an ElementError of that kind (exit code 2, with a hint) whose message matches. */
function expectError(t: Test, fn: () => unknown, kind: string, message: RegExp): ElementError {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  if (!(caught instanceof ElementError)) throw new Error(`expected an ElementError, got ${String(caught)}`);
  t.equal(caught.kind, kind);
  t.equal(caught.exitCode, 2, "usage error: exit 2");
  t.match(caught.message, message);
  t.ok((caught.hint ?? "").length > 10, "has a hint");
  return caught;
}

t.test("addDefaultElements follows disk-image-create's arg_to_elements", async (t) => {
  t.same(addDefaultElements(["debian-minimal"]), ["base", "debian-minimal"], "base goes first");
  t.same(addDefaultElements(["debian-minimal"], { skipBase: true }), ["debian-minimal"], "-n: no base");
  t.same(addDefaultElements(["vm", "debian-minimal"]), ["base", "vm", "debian-minimal", "block-device-mbr"]);
  t.same(addDefaultElements(["vm", "debian-minimal"], { arch: "arm64" }), [
    "base",
    "vm",
    "debian-minimal",
    "block-device-efi",
  ]);
  t.same(addDefaultElements(["vm", "x"], { arch: "aarch64", skipBase: true }), ["vm", "x", "block-device-efi"]);
  t.same(addDefaultElements(["vm", "x"], { arch: "i386", skipBase: true }), ["vm", "x", "block-device-mbr"]);
  t.same(
    addDefaultElements(["vm", "block-device-gpt", "x"]),
    ["base", "vm", "block-device-gpt", "x"],
    "own block device",
  );
  t.same(
    addDefaultElements(["vm", "block-device-custom"], { skipBase: true }),
    ["vm", "block-device-custom"],
    "any block-device-* counts, existing or not",
  );
  t.same(addDefaultElements(["vm-extra", "x"], { skipBase: true }), ["vm-extra", "x"], "only exactly `vm` counts");
  t.same(addDefaultElements(["x", "base", "x"]), ["base", "x"], "duplicates dropped, base not repeated");
});

t.test("expandElements follows element-deps transitively and sorts by name", async (t) => {
  t.same(names(expandElements(["base", "debian-minimal"], WORLD, SEARCH)), [
    "base",
    "debian-minimal",
    "debootstrap",
    "dpkg",
    "install-types",
    "pkg-map",
  ]);
});

t.test("the result does not depend on the order of the request", async (t) => {
  const request = ["zipl", "vm", "block-device-gpt", "debian-minimal", "base"];
  const expected = names(expandElements(request, WORLD, SEARCH));
  t.same(expected, [
    "base",
    "block-device-gpt",
    "debian-minimal",
    "debootstrap",
    "dpkg",
    "install-types",
    "pkg-map",
    "vm",
    "zipl",
  ]);
  for (const order of [[...request].reverse(), [request[3], request[0], request[2], request[1], request[4]]]) {
    t.same(names(expandElements(order as string[], WORLD, SEARCH)), expected, order.join(" "));
  }
});

t.test("a provided (virtual) element is satisfied by its provider, not looked up", async (t) => {
  const got = names(expandElements(["vm", "debian-minimal", "block-device-mbr"], WORLD, SEARCH));
  t.same(got, ["block-device-mbr", "bootloader", "debian-minimal", "debootstrap", "dpkg", "pkg-map", "vm"]);
  t.notOk(got.includes("block-device"), "the virtual name is not in the set");
  const withZipl = names(expandElements(["zipl", "vm", "debian-minimal", "block-device-mbr"], WORLD, SEARCH));
  t.notOk(withZipl.includes("bootloader"), "zipl provides bootloader, so the bootloader element is left out");
});

t.test("DIB's errors", async (t) => {
  t.test("unknown requested element names it and the search path", async (t) => {
    const e = expectError(
      t,
      () => expandElements(["debian-minimal", "nope"], WORLD, SEARCH),
      "not-found",
      /'nope' not found/,
    );
    t.same(e.context, ["searched, in order:", "  /first", "  /e"]);
    t.match(e.hint, /ELEMENTS_PATH/);
  });
  t.test("unknown dependency names who needs it", async (t) => {
    const e = expectError(
      t,
      () => expandElements(["debian-minimal", "needs-ghost"], WORLD, SEARCH),
      "not-found",
      /element 'ghost' not found \(required by 'needs-ghost'\)/,
    );
    t.match(e.hint, /needs-ghost/);
  });
  t.test("a virtual element with no provider is not found (DIB: vm without a block device)", async (t) => {
    expectError(
      t,
      () => expandElements(["vm", "debian-minimal"], WORLD, SEARCH),
      "not-found",
      /'block-device' not found/,
    );
  });
  t.test("two operating systems", async (t) => {
    expectError(
      t,
      () => expandElements(["debian-minimal", "ubuntu-minimal"], WORLD, SEARCH),
      "provided-twice",
      /'operating-system' is provided by both 'debian-minimal' and 'ubuntu-minimal'/,
    );
  });
  t.test("the same virtual element provided twice", async (t) => {
    const e = expectError(
      t,
      () => expandElements(["vm", "debian-minimal", "block-device-mbr", "block-device-gpt"], WORLD, SEARCH),
      "provided-twice",
      /'block-device' is provided by both 'block-device-mbr' and 'block-device-gpt'/,
    );
    t.match(e.hint, /block-device-mbr.*block-device-gpt/);
  });
  t.test("requesting an element that another one provides", async (t) => {
    expectError(
      t,
      () => expandElements(["zipl", "bootloader", "debian-minimal"], WORLD, SEARCH),
      "requested-provided",
      /already provided by another element: 'bootloader' \(provided by 'zipl'\)/,
    );
  });
  t.test("no operating system lists the candidates", async (t) => {
    const e = expectError(
      t,
      () => expandElements(["base"], WORLD, SEARCH),
      "no-operating-system",
      /no operating-system/,
    );
    t.match(e.hint, /debian-minimal, ubuntu-minimal/);
  });
  t.test("no operating system anywhere on the search path", async (t) => {
    const e = expectError(
      t,
      () => expandElements(["x"], tree(el("x")), SEARCH),
      "no-operating-system",
      /no operating-system/,
    );
    t.match(e.hint, /ELEMENTS_PATH/);
  });
  t.test(
    "an element requested twice is expanded once (DIB would report operating-system provided twice)",
    async (t) => {
      t.same(names(expandElements(["debian-minimal", "debian-minimal"], WORLD, SEARCH)).length, 4);
    },
  );
});

t.test("resolveElements = additions + expansion", async (t) => {
  const r = resolveElements(["vm", "debian-minimal"], { elements: WORLD, searchPath: SEARCH });
  t.same(r.requested, ["base", "vm", "debian-minimal", "block-device-mbr"]);
  t.same(names(r.elements), [
    "base",
    "block-device-mbr",
    "bootloader",
    "debian-minimal",
    "debootstrap",
    "dpkg",
    "install-types",
    "pkg-map",
    "vm",
  ]);
  const n = resolveElements(
    ["vm", "debian-minimal"],
    { elements: WORLD, searchPath: SEARCH },
    { skipBase: true, arch: "arm64" },
  );
  t.same(n.requested, ["vm", "debian-minimal", "block-device-efi"]);
  t.notOk(names(n.elements).includes("base"));
});

t.test("IMAGE_ELEMENT variables in element-info --env's format", async (t) => {
  const elements = [el("base"), el("debian-minimal")];
  const vars = imageElementVars(elements);
  t.equal(vars.IMAGE_ELEMENT, "base debian-minimal");
  t.equal(vars.IMAGE_ELEMENT_YAML, "base: /e/base\ndebian-minimal: /e/debian-minimal\n");
  t.equal(
    renderElementEnv(elements),
    [
      "export IMAGE_ELEMENT='base debian-minimal'",
      "export IMAGE_ELEMENT_YAML='base: /e/base",
      "debian-minimal: /e/debian-minimal",
      "'",
      "function get_image_element_array {",
      '  echo "[base]=/e/base [debian-minimal]=/e/debian-minimal "',
      "};",
      "export -f get_image_element_array;",
      "",
    ].join("\n"),
  );
  t.equal(
    imageElementVars([{ name: "yes", path: "/a b/yes" }]).IMAGE_ELEMENT_YAML,
    "'yes': /a b/yes\n",
    "YAML 1.1 quoting",
  );
  t.match(
    renderElementEnv([{ name: "x", path: "/it's/x" }]),
    "export IMAGE_ELEMENT_YAML='x: /it'\\''s/x\n'",
    "shell-safe quote",
  );
});
