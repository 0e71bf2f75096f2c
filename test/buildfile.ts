// Build files (src/buildfile.ts): DIB's keys and merging rules, and every bad file refused with file, entry, line, key.
import t from "tap";
import { describeImage, parseBuildFile, parseBuildFiles } from "../src/buildfile.js";
import { imageOptions, parseArgv } from "../src/config.js";
import { UsageError } from "../src/errors.js";

/** The UsageError a bad file gives (or a failed test when it parses). */
function refusal(text: string, file = "images.yaml"): UsageError {
  try {
    parseBuildFile(text, file);
  } catch (err) {
    if (err instanceof UsageError) return err;
    throw err;
  }
  throw new Error(`parsed without an error:\n${text}`);
}

t.test("DIB's keys become the settings of each image", async (t) => {
  const images = parseBuildFile(
    `
- imagename: out/web
  elements: [vm, debian-minimal]
  types: [qcow2, tar]
  environment:
    DIB_RELEASE: bookworm
    DIB_NUMBER: 12
  packages: [nginx, curl]
  checksum: true
  uncompressed: true
  debug-trace: 2
  image-size: 3
  qemu-img-options: {compat: "1.1", lazy_refcounts: "on"}
  skip-base: true
- imagename: out/db
  elements: vm debian-minimal
  types: raw,vhd
  image-size: 512M
`,
    "images.yaml",
  );
  t.equal(images.length, 2);
  const [web, db] = images;
  t.same(web?.elements, ["vm", "debian-minimal"]);
  t.same(web?.environment, { DIB_RELEASE: "bookworm", DIB_NUMBER: "12" }, "environment values are strings");
  t.same(web?.settings, {
    imageName: "out/web",
    types: ["qcow2", "tar"],
    packages: ["nginx", "curl"],
    checksum: true,
    compress: false,
    trace: 2,
    imageSize: "3",
    qemuImgOptions: "compat=1.1,lazy_refcounts=on",
    skipBase: true,
  });
  t.equal(web?.line, 2);
  t.same(db?.elements, ["vm", "debian-minimal"], "a string of elements is split at spaces");
  t.same(db?.settings.types, ["raw", "vhd"], "a string of types at commas, as -t takes them");
  t.equal(describeImage(db as never), "images.yaml entry 2 (line 15, imagename 'out/db')");
});

t.test(
  "DIB's merging: no imagename continues the one before; the same imagename is merged into one image",
  async (t) => {
    const images = parseBuildFile(
      `
- elements: [vm]
- elements: [debian-minimal]
  environment: {A: "1"}
- imagename: other
  elements: [vm, ubuntu-minimal]
- imagename: image
  environment: {A: "2", B: "3"}
  types: [raw]
`,
      "f.yaml",
    );
    t.equal(images.length, 2);
    t.same(
      images[0]?.entries.map((e) => e.index),
      [1, 2, 4],
      "entries 1, 2 and 4 are the image 'image'",
    );
    t.same(images[0]?.elements, ["vm", "debian-minimal"], "lists are appended");
    t.same(images[0]?.environment, { A: "2", B: "3" }, "maps are updated");
    t.same(images[0]?.settings.types, ["raw"]);
    t.equal(images[1]?.imageName, "other");
    t.match(describeImage(images[0] as never), /f\.yaml entries 1, 2, 4 \(line 2, imagename 'image'\)/);
    t.equal(parseBuildFile("- elements: [x]\n", "f", "out/cli")[0]?.imageName, "out/cli", "the default name (-o)");
  },
);

t.test("several files are one list of entries, as DIB reads them", async (t) => {
  const images = parseBuildFiles([
    { name: "a.yaml", text: "- imagename: x\n  elements: [vm]\n- imagename: y\n  elements: [vm]\n" },
    { name: "b.yaml", text: "- elements: [debian-minimal]\n- imagename: z\n  elements: [vm]\n" },
  ]);
  t.same(
    images.map((i) => [i.imageName, i.elements]),
    [
      ["x", ["vm"]],
      ["y", ["vm", "debian-minimal"]],
      ["z", ["vm"]],
    ],
    "b.yaml's first entry continues a.yaml's last image",
  );
  t.equal(describeImage(images[1] as never), "a.yaml entry 2 + b.yaml entry 1 (line 3, imagename 'y')");
  t.throws(
    () =>
      parseBuildFiles([
        { name: "a.yaml", text: "- imagename: x\n  elements: [vm]\n" },
        { name: "b.yaml", text: "- imagename: z\n  bogus: 1\n" },
      ]),
    /^b\.yaml entry 1 \('z'\), line 2: unknown key 'bogus'/,
  );
});

t.test("a syntax error names the file, line and column", async (t) => {
  const err = refusal("- imagename: a\n  elements: [x\n- imagename: b\n");
  t.match(err.message, /^images\.yaml:3:1: YAML syntax error: Flow sequence/);
  t.equal(err.exitCode, 2);
  t.match(refusal("- imagename: a\n  imagename: b\n  elements: [x]\n").message, /images\.yaml:2:3: .*unique/);
});

t.test("an unknown key names the file, entry, line and key, with the nearest known one", async (t) => {
  const err = refusal("- imagename: a\n  elements: [x]\n- imagename: b\n  elemnts: [x]\n");
  t.equal(err.message, "images.yaml entry 2 ('b'), line 4: unknown key 'elemnts'");
  t.match(err.hint, /did you mean 'elements'\?/);
  t.match(err.hint, /imagename, arch, types, environment/);
  t.match(refusal("- name: a\n  elements: [x]\n").hint, /did you mean 'imagename'/);
  t.match(refusal("- imagename: a\n  elements: [x]\n  memory: 4096\n").message, /unknown key 'memory'/);
});

t.test("missing elements, and values of the wrong shape", async (t) => {
  t.equal(
    refusal("- imagename: a\n  types: [qcow2]\n").message,
    "images.yaml entry 1 (line 1, imagename 'a'): no elements: every image needs 'elements', a list with at least one element",
  );
  t.match(refusal("- imagename: a\n  elements: []\n").message, /no elements/);
  const cases: [string, RegExp][] = [
    ["elements: {a: b}", /entry 1 \('a'\), line 2: 'elements' must be a list of strings, got a mapping/],
    ["checksum: yes please", /'checksum' must be true or false, got string "yes please"/],
    ["debug-trace: -1", /'debug-trace' must be a whole number/],
    ["environment: [A=1]", /'environment' must be a mapping of names to values, got a list/],
    ["environment: {1A: x}", /'1A' is not a variable name/],
    ["environment: {A: [1]}", /'A' is a list/],
    ["install-type: binary", /'install-type' must be one of source, package/],
    ["max-online-resize: lots", /'max-online-resize' must be a whole number/],
    ["imagename: ''", /'imagename' must be a non-empty string/],
  ];
  for (const [line, expected] of cases) {
    const text = line.startsWith("imagename")
      ? `- ${line}\n  elements: [x]\n`
      : `- imagename: a\n  ${line}\n${line.startsWith("elements") ? "" : "  elements: [x]\n"}`;
    t.match(refusal(text).message, expected, line);
  }
});

t.test("what is not a list of images, and ramdisks", async (t) => {
  t.match(refusal("").message, /images\.yaml: expected a list of images, found an empty file/);
  t.match(refusal("imagename: a\nelements: [x]\n").message, /found a mapping/);
  t.match(refusal("[]\n").message, /the list of images is empty/);
  t.match(refusal("- vm\n").message, /images\.yaml entry 1 \(line 1\): an image must be a mapping/);
  t.match(refusal("- imagename: r\n  ramdisk: true\n  elements: [x]\n").message, /ramdisk images .* not supported/);
  t.equal(parseBuildFile("- ramdisk: false\n  elements: [x]\n", "f").length, 1, "ramdisk: false is a disk image");
});

t.test("an image's options: its keys win over the command line, which wins over the environment", async (t) => {
  const cli = parseArgv(["-f", "images.yaml", "-t", "raw", "--checksum", "-o", "cli", "--memory", "4096"]);
  const [a, b] = parseBuildFile(
    "- imagename: a\n  elements: [x]\n  types: [tar]\n  checksum: false\n  environment: {DIB_CHECKSUM: '1', DIB_IMAGE_SIZE: '2'}\n- imagename: b\n  elements: [y, z]\n",
    "images.yaml",
  );
  const env = { DIB_IMAGE_SIZE: "1", ARCH: "arm64" };
  const oa = imageOptions(cli, { ...env, ...a?.environment }, a as never, "a");
  t.same(oa.types, ["tar"], "the entry's types replace -t");
  t.equal(oa.checksum, false, "checksum: false wins over --checksum");
  t.equal(oa.imageSize, 2 * 1024 ** 3, "the entry's environment wins over the host's");
  t.equal(oa.arch, "arm64", "the host's environment still counts");
  t.equal(oa.memoryMb, 4096, "the command line's settings are every image's defaults");
  t.same(oa.files, [], "an image is one build");
  const ob = imageOptions(cli, env, b as never, "b");
  t.same(ob.types, ["raw"], "-t for an image that names none");
  t.equal(ob.checksum, true);
  t.equal(ob.imageSize, 1024 ** 3, "the other image's environment does not leak into this one");
  t.same(ob.elements, ["y", "z"]);
  t.throws(
    () => imageOptions(cli, env, { settings: { types: ["qcow3"] }, elements: ["x"] }, "images.yaml entry 3"),
    /images\.yaml entry 3: 'types': unknown image type 'qcow3'/,
  );
});
