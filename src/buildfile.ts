// YAML build files (`vmdib build -f FILE`), in diskimage-builder's `diskimage-builder` format: parse, validate every
// key against DIB's schema, merge entries that name the same image as DIB does → the list of images to build (pure).
import { isMap, isScalar, isSeq, LineCounter, type Node, parseDocument, type YAMLMap } from "yaml";
import type { BuildOptions } from "./config.js";
import { UsageError } from "./errors.js";

/** How a key's value must look in the file. */
type KeyType = "string" | "boolean" | "integer" | "size" | "list" | "map" | "trace";

interface KeySpec {
  readonly type: KeyType;
  /** The `vmdib build` setting (src/config.ts SETTINGS) it sets; absent for keys handled here. */
  readonly setting?: keyof BuildOptions;
  /** Allowed values (DIB's enums that vmdib shares). */
  readonly values?: readonly string[];
}

/**
 * Every key of DIB's image definition (diskimage_builder.py PROPERTIES), spelled as DIB spells it so DIB users'
 * files work unchanged. Anything else in an entry is an error.
 */
export const BUILD_FILE_KEYS: Readonly<Record<string, KeySpec>> = {
  imagename: { type: "string", setting: "imageName" },
  arch: { type: "string", setting: "arch" },
  types: { type: "list", setting: "types" },
  environment: { type: "map" },
  ramdisk: { type: "boolean" },
  "debug-trace": { type: "trace", setting: "trace" },
  uncompressed: { type: "boolean", setting: "compress" },
  clear: { type: "boolean", setting: "clearEnv" },
  logfile: { type: "string", setting: "logfile" },
  checksum: { type: "boolean", setting: "checksum" },
  "image-size": { type: "size", setting: "imageSize" },
  "image-extra-size": { type: "size", setting: "imageExtraSize" },
  "image-cache": { type: "string", setting: "imageCache" },
  "max-online-resize": { type: "integer", setting: "maxOnlineResize" },
  "min-tmpfs": { type: "size", setting: "minTmpfsGb" },
  "mkfs-journal-size": { type: "size", setting: "journalSizeMb" },
  "mkfs-options": { type: "string", setting: "mkfsOptions" },
  "no-tmpfs": { type: "boolean", setting: "noTmpfs" },
  offline: { type: "boolean", setting: "offline" },
  "qemu-img-options": { type: "map", setting: "qemuImgOptions" },
  "root-label": { type: "string", setting: "rootLabel" },
  "ramdisk-element": { type: "string" },
  "install-type": { type: "string", setting: "installType", values: ["source", "package"] },
  "docker-target": { type: "string", setting: "dockerTarget" },
  packages: { type: "list", setting: "packages" },
  "skip-base": { type: "boolean", setting: "skipBase" },
  elements: { type: "list" },
};

/** A value as the settings table takes it: a string for value rows, a boolean for flags, a count, or list items. */
export type SettingValue = string | boolean | number | readonly string[];

/** An entry of a build file: the file and its 1-based position in the file's list. */
export interface EntryRef {
  readonly file: string;
  readonly index: number;
}

/** One image to build: one entry of a file, or several DIB merged because they share an imagename. */
export interface BuildFileImage {
  /** The file of its first entry. */
  readonly file: string;
  /** The entries that make this image (DIB merges entries per imagename, across all the files given). */
  readonly entries: readonly EntryRef[];
  /** Line of its first entry. */
  readonly line: number;
  /** The image name: the entry's imagename, else the one before it (DIB), else the default. */
  readonly imageName: string;
  /** Settings the entries give, by `vmdib build` setting; the command line supplies the rest. */
  readonly settings: Readonly<Partial<Record<keyof BuildOptions, SettingValue>>>;
  /** The entries' `environment`: variables on top of the host's for this image only. */
  readonly environment: Readonly<Record<string, string>>;
  readonly elements: readonly string[];
}

/** "images.yaml entry 2 (line 7, imagename 'b')": how messages name an image of a build file. */
export function describeImage(image: Pick<BuildFileImage, "entries" | "line" | "imageName">): string {
  const files = [...new Set(image.entries.map((e) => e.file))];
  const which = files.map((file) => {
    const indexes = image.entries.filter((e) => e.file === file).map((e) => e.index);
    return `${file} ${indexes.length > 1 ? "entries" : "entry"} ${indexes.join(", ")}`;
  });
  return `${which.join(" + ")} (line ${image.line}, imagename '${image.imageName}')`;
}

interface RawEntry extends EntryRef {
  readonly line: number;
  readonly values: Map<string, unknown>;
}

const HINT = "a build file is a YAML list of images, as DIB's diskimage-builder reads it; see `vmdib help build`";

/** The images one build file asks for (pure): parseBuildFiles of that file alone. */
export function parseBuildFile(text: string, file: string, defaultImageName = "image"): BuildFileImage[] {
  return parseBuildFiles([{ name: file, text }], defaultImageName);
}

/**
 * The images build files ask for (pure), their entries taken as one list in order, as DIB does with several files.
 * `defaultImageName` is the name entries without an imagename get before any entry names one (DIB: "image"; vmdib:
 * -o when given). Throws UsageError naming the file, the entry, the line and the key for anything DIB's schema would
 * refuse, and for what vmdib cannot build (ramdisk images).
 */
export function parseBuildFiles(
  files: readonly { readonly name: string; readonly text: string }[],
  defaultImageName = "image",
): BuildFileImage[] {
  const raw = files.flatMap((f) => readEntries(f.text, f.name));
  // DIB: an entry without imagename continues the one before; entries with the same imagename are merged into one
  // image (lists appended, maps updated, other values replaced).
  const merged = new Map<string, { entries: EntryRef[]; line: number; values: Map<string, unknown> }>();
  let previous = defaultImageName;
  for (const e of raw) {
    const name = (e.values.get("imagename") as string | undefined) ?? previous;
    previous = name;
    const ref = { file: e.file, index: e.index };
    const into = merged.get(name);
    if (!into) {
      merged.set(name, { entries: [ref], line: e.line, values: new Map(e.values) });
      continue;
    }
    into.entries.push(ref);
    for (const [k, v] of e.values) {
      const before = into.values.get(k);
      if (Array.isArray(v)) into.values.set(k, [...((before as unknown[] | undefined) ?? []), ...v]);
      else if (typeof v === "object" && v !== null)
        into.values.set(k, { ...((before as object | undefined) ?? {}), ...(v as object) });
      else into.values.set(k, v);
    }
  }

  return [...merged].map(([imageName, m]) => {
    const where = describeImage({ entries: m.entries, line: m.line, imageName });
    if (m.values.get("ramdisk") === true)
      throw new UsageError(`${where}: ramdisk images (DIB's ramdisk-image-create) are not supported by vmdib`, {
        hint: "build a disk image instead (drop `ramdisk: true`)",
      });
    const elements = (m.values.get("elements") as string[] | undefined) ?? [];
    if (elements.length === 0)
      throw new UsageError(`${where}: no elements: every image needs 'elements', a list with at least one element`, {
        hint: "for example: elements: [vm, debian-minimal]",
      });
    const settings: Partial<Record<keyof BuildOptions, SettingValue>> = {};
    for (const [key, value] of m.values) {
      const spec = BUILD_FILE_KEYS[key];
      if (!spec?.setting) continue;
      if (spec.setting === "qemuImgOptions" && typeof value === "object" && !Array.isArray(value)) {
        // DIB's ArgDictToString: {a: b, c: d} → "a=b,c=d".
        settings.qemuImgOptions = Object.entries(value as Record<string, string>)
          .map(([k, v]) => `${k}=${v}`)
          .join(",");
      } else if (spec.setting === "compress") settings.compress = value !== true;
      else settings[spec.setting] = value as SettingValue;
    }
    settings.imageName = imageName;
    return {
      file: m.entries[0]?.file ?? "",
      entries: m.entries,
      line: m.line,
      imageName,
      settings,
      environment: (m.values.get("environment") as Record<string, string> | undefined) ?? {},
      elements,
    };
  });
}

/** One file's entries, each checked key by key. */
function readEntries(text: string, file: string): RawEntry[] {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: true, uniqueKeys: true });
  const syntax = doc.errors[0];
  if (syntax) {
    const at = syntax.linePos?.[0];
    const first = syntax.message.split("\n")[0]?.replace(/ at line \d+, column \d+:?$/, "");
    throw new UsageError(`${file}${at ? `:${at.line}:${at.col}` : ""}: YAML syntax error: ${first}`, {
      hint: "fix the YAML at that line",
      context: syntax.message.split("\n").slice(1).filter(Boolean),
    });
  }
  const lineOf = (node: Node | null | undefined) => (node?.range ? lines.linePos(node.range[0]).line : 1);
  const root = doc.contents;
  if (!isSeq(root)) {
    const found = root === null ? "an empty file" : isMap(root) ? "a mapping" : "a single value";
    throw new UsageError(`${file}: expected a list of images, found ${found}`, { hint: HINT });
  }
  if (root.items.length === 0) throw new UsageError(`${file}: the list of images is empty`, { hint: HINT });

  const raw: RawEntry[] = root.items.map((item, i) => {
    const index = i + 1;
    const node = item as Node;
    if (!isMap(node))
      throw new UsageError(`${file} entry ${index} (line ${lineOf(node)}): an image must be a mapping of keys`, {
        hint: "for example:\n  - imagename: out/debian\n    elements: [vm, debian-minimal]",
      });
    return { file, index, line: lineOf(node), values: entryValues(node as YAMLMap, file, index, lineOf) };
  });

  return raw;
}

/** One entry's keys, each checked against BUILD_FILE_KEYS and turned into a plain value. */
function entryValues(
  map: YAMLMap,
  file: string,
  index: number,
  lineOf: (node: Node | null | undefined) => number,
): Map<string, unknown> {
  const out = new Map<string, unknown>();
  const imagename = map.get("imagename");
  const label = `${file} entry ${index}${typeof imagename === "string" ? ` ('${imagename}')` : ""}`;
  for (const pair of map.items) {
    const keyNode = pair.key as Node | null;
    const key = isScalar(keyNode) ? String(keyNode.value) : undefined;
    const line = lineOf(keyNode);
    const at = `${label}, line ${line}`;
    if (key === undefined) throw new UsageError(`${at}: a key must be a plain name`, { hint: HINT });
    const spec = BUILD_FILE_KEYS[key];
    if (!spec) {
      const near = nearestKey(key);
      throw new UsageError(`${at}: unknown key '${key}'`, {
        hint: `${near ? `did you mean '${near}'? ` : ""}known keys (DIB's): ${Object.keys(BUILD_FILE_KEYS).join(", ")}`,
      });
    }
    const valueNode = pair.value as Node | null;
    const value = isScalar(valueNode) ? valueNode.value : valueNode?.toJSON();
    out.set(key, checkValue(key, spec, value, `${at}: '${key}'`));
  }
  return out;
}

/** The value in the shape the key needs, or a UsageError saying what was expected. */
function checkValue(key: string, spec: KeySpec, value: unknown, where: string): unknown {
  const bad = (expected: string) =>
    new UsageError(`${where} must be ${expected}, got ${describe(value)}`, { hint: `see DIB's docs for '${key}'` });
  const scalar = (v: unknown) => typeof v === "string" || (typeof v === "number" && Number.isFinite(v));
  switch (spec.type) {
    case "string": {
      if (!scalar(value) || String(value) === "") throw bad("a non-empty string");
      const s = String(value);
      if (spec.values && !spec.values.includes(s)) throw bad(`one of ${spec.values.join(", ")}`);
      return s;
    }
    case "boolean":
      if (typeof value !== "boolean") throw bad("true or false");
      return value;
    case "integer":
      if (!(typeof value === "number" && Number.isInteger(value) && value >= 0) && !/^\d+$/.test(String(value)))
        throw bad("a whole number");
      return String(value);
    case "size":
      // A number as DIB has it (GB, or MB for the journal), or vmdib's sizes with a unit ("512M").
      if (!scalar(value)) throw bad("a number");
      return String(value);
    case "trace":
      if (!(typeof value === "number" && Number.isInteger(value) && value >= 0 && value <= 9))
        throw bad("a whole number from 0 (off) up");
      return value;
    case "list": {
      // DIB takes lists; a single string is taken too (comma separated, as on the command line; elements: spaces).
      const items =
        typeof value === "string"
          ? value.split(key === "elements" ? /\s+/ : ",")
          : Array.isArray(value) && value.every(scalar)
            ? value.map(String)
            : undefined;
      if (!items) throw bad("a list of strings");
      return items.map((s) => s.trim()).filter((s) => s !== "");
    }
    case "map": {
      if (key === "qemu-img-options" && typeof value === "string") return value;
      if (typeof value !== "object" || value === null || Array.isArray(value))
        throw bad("a mapping of names to values");
      const out: Record<string, string> = {};
      for (const [k, v] of Object.entries(value)) {
        if (key === "environment" && !/^[A-Za-z_][A-Za-z0-9_]*$/.test(k))
          throw new UsageError(`${where}: '${k}' is not a variable name`, {
            hint: "names are letters, digits and _, not starting with a digit",
          });
        if (!scalar(v) && typeof v !== "boolean") throw bad(`a mapping of names to strings ('${k}' is ${describe(v)})`);
        out[k] = String(v);
      }
      return out;
    }
  }
}

function describe(v: unknown): string {
  if (v === null || v === undefined) return "nothing";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "a mapping";
  return `${typeof v} ${JSON.stringify(v)}`;
}

/** The known key closest to a misspelt one (edit distance ≤ 2), for the hint. */
function nearestKey(key: string): string | undefined {
  let best: [string, number] | undefined;
  for (const known of Object.keys(BUILD_FILE_KEYS)) {
    const d = editDistance(key.toLowerCase(), known);
    if (d <= 2 && (!best || d < best[1])) best = [known, d];
  }
  if (key === "name") return "imagename";
  return best?.[0];
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = row[0] as number;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = row[j] as number;
      row[j] = Math.min(up + 1, (row[j - 1] as number) + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return row[b.length] as number;
}
