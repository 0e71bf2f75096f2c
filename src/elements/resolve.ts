// Element resolution (pure, DIB semantics): disk-image-create's default additions, element-deps expansion with
// element-provides, the operating-system rule, DIB's errors; plus the IMAGE_ELEMENT* variables DIB exports.
import { stringify } from "yaml";
import { UsageError } from "../errors.js";
import type { Discovery, ElementInfo } from "./discover.js";

/** Which rule an element tree or request broke; lets callers and tests tell DIB's failure modes apart. */
export type ElementErrorKind =
  | "invalid-path" // an ELEMENTS_PATH entry is missing or not a directory (DIB: InvalidElementDir)
  | "unreadable" // a file or directory of an element tree cannot be read (DIB: a Python traceback)
  | "not-found" // DIB: MissingElementException
  | "provided-twice" // DIB: AlreadyProvidedException during expansion
  | "requested-provided" // DIB: AlreadyProvidedException for a requested element that another element provides
  | "no-operating-system" // DIB: MissingOSException
  | "duplicate-hook"; // DIB: generate_hooks' "duplicated hook in your elements"

/** A usage error (exit 2) about elements, tagged with the DIB rule it corresponds to. */
export class ElementError extends UsageError {
  readonly kind: ElementErrorKind;
  constructor(kind: ElementErrorKind, message: string, details: { hint: string; context?: string[]; cause?: unknown }) {
    super(message, details);
    this.name = "ElementError";
    this.kind = kind;
  }
}

export interface DefaultElementOptions {
  /** `-n`: do not add `base`. */
  readonly skipBase?: boolean;
  /** `-a`; decides which block-device element `vm` gets by default. */
  readonly arch?: string;
}

/**
 * The element list disk-image-create hands to element-info (common-functions: arg_to_elements and
 * _arg_defaults_hack): when an argument is exactly `vm` and none starts with `block-device-`, the default block
 * device is appended (`block-device-efi` when "arm64 aarch64" =~ $ARCH, else `block-device-mbr`); then `base` is
 * put first unless -n. Unlike DIB, duplicates are dropped (DIB would expand a repeated OS element twice and fail
 * with "operating-system: already provided").
 */
export function addDefaultElements(requested: readonly string[], options: DefaultElementOptions = {}): string[] {
  const out = [...requested];
  const vmSeen = requested.includes("vm");
  const blockDeviceSeen = requested.some((name) => name.startsWith("block-device-"));
  if (vmSeen && !blockDeviceSeen) {
    // bash `[[ "arm64 aarch64" =~ $ARCH ]]`: $ARCH is an (unquoted) regex searched in that string; for the
    // architecture names in use that is a substring test.
    const arch = options.arch ?? "amd64";
    out.push("arm64 aarch64".includes(arch) ? "block-device-efi" : "block-device-mbr");
  }
  if (!options.skipBase) out.unshift("base");
  return [...new Set(out)];
}

/**
 * DIB's `_expand_element_dependencies`, deterministic: a breadth-first walk from the requested elements (in the
 * given order) over element-deps (in name order, where DIB iterates a Python set). An element already provided by
 * one walked earlier is not expanded; providing a name twice, requesting a provided element, a missing element and
 * a missing operating-system are DIB's errors. Returns the elements sorted by name (C byte order).
 */
export function expandElements(
  requested: readonly string[],
  elements: ReadonlyMap<string, ElementInfo>,
  searchPath: readonly string[],
): ElementInfo[] {
  const wanted = [...new Set(requested)];
  const final = new Set(wanted);
  const queue = [...wanted];
  const providedBy = new Map<string, string>();
  const requiredBy = new Map<string, string>();
  for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
    if (providedBy.has(next)) continue; // bug #1303911 in DIB: virtual elements are satisfied, not looked up
    const element = elements.get(next);
    if (element === undefined) throw notFound(next, requiredBy.get(next), searchPath);
    for (const name of element.provides) {
      const earlier = providedBy.get(name);
      if (earlier !== undefined) throw providedTwice(name, earlier, element.name);
      providedBy.set(name, element.name);
    }
    for (const dep of element.deps) {
      if (final.has(dep) || providedBy.has(dep)) continue;
      final.add(dep);
      queue.push(dep);
      requiredBy.set(dep, element.name);
    }
  }

  const conflicts = wanted.filter((name) => providedBy.has(name)).sort(byteOrder);
  if (conflicts.length > 0) {
    const what = conflicts.map((name) => `'${name}' (provided by '${providedBy.get(name)}')`).join(", ");
    throw new ElementError(
      "requested-provided",
      `requested element${plural(conflicts)} already provided by another element: ${what}`,
      {
        hint: `an element that another element provides cannot be asked for as well; drop ${conflicts.map((n) => `'${n}'`).join(", ")} or the element that provides it`,
      },
    );
  }

  if (!providedBy.has("operating-system")) {
    const candidates = [...elements.values()]
      .filter((e) => e.provides.includes("operating-system"))
      .map((e) => e.name)
      .sort(byteOrder);
    throw new ElementError("no-operating-system", "no operating-system element in the element set", {
      hint:
        candidates.length > 0
          ? `include exactly one operating system element, e.g. one of: ${candidates.join(", ")}`
          : "include an operating system element (one whose element-provides lists operating-system); none was found on the search path, so set ELEMENTS_PATH to a directory holding one",
    });
  }

  const out: ElementInfo[] = [];
  for (const name of final) {
    const element = elements.get(name);
    if (!providedBy.has(name) && element !== undefined) out.push(element);
  }
  return out.sort((a, b) => byteOrder(a.name, b.name));
}

export interface Resolution {
  /** What was asked for after disk-image-create's additions (`base`, default block device), in DIB's order. */
  readonly requested: readonly string[];
  /** The full element set, sorted by name. */
  readonly elements: readonly ElementInfo[];
}

/** Requested names + discovered elements → the element set a build uses (additions, then DIB's expansion). */
export function resolveElements(
  requested: readonly string[],
  discovery: Pick<Discovery, "elements" | "searchPath">,
  options: DefaultElementOptions = {},
): Resolution {
  const withDefaults = addDefaultElements(requested, options);
  return { requested: withDefaults, elements: expandElements(withDefaults, discovery.elements, discovery.searchPath) };
}

/**
 * The variables element-info --env exports: IMAGE_ELEMENT (names, space separated) and IMAGE_ELEMENT_YAML (a
 * name → path mapping; PyYAML's safe_dump style: block mapping, keys sorted, YAML 1.1 quoting in single quotes).
 */
export function imageElementVars(elements: readonly Pick<ElementInfo, "name" | "path">[]): {
  IMAGE_ELEMENT: string;
  IMAGE_ELEMENT_YAML: string;
} {
  const sorted = [...elements].sort((a, b) => byteOrder(a.name, b.name));
  const mapping = Object.fromEntries(sorted.map((e) => [e.name, e.path]));
  return {
    IMAGE_ELEMENT: elements.map((e) => e.name).join(" "),
    IMAGE_ELEMENT_YAML: stringify(mapping, { version: "1.1", singleQuote: true }),
  };
}

/**
 * element-info --env's output, line for line: the two exports and the `get_image_element_array` function that
 * disk-image-create's generate_hooks evals. Values are single-quoted for the shell (DIB does not escape a `'`
 * inside them; here it is escaped, identical output otherwise).
 */
export function renderElementEnv(elements: readonly Pick<ElementInfo, "name" | "path">[]): string {
  const vars = imageElementVars(elements);
  const array = elements.map((e) => `[${e.name}]=${e.path} `).join("");
  return [
    `export IMAGE_ELEMENT=${shellQuote(vars.IMAGE_ELEMENT)}`,
    `export IMAGE_ELEMENT_YAML=${shellQuote(vars.IMAGE_ELEMENT_YAML)}`,
    "function get_image_element_array {",
    `  echo "${array}"`,
    "};",
    "export -f get_image_element_array;",
    "",
  ].join("\n");
}

function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

function notFound(name: string, parent: string | undefined, searchPath: readonly string[]): ElementError {
  return new ElementError("not-found", `element '${name}' not found${parent ? ` (required by '${parent}')` : ""}`, {
    context: ["searched, in order:", ...searchPath.map((p) => `  ${p}`)],
    hint:
      parent === undefined
        ? "check the name, or add the directory that holds it to ELEMENTS_PATH (colon-separated)"
        : `'${parent}' lists it in element-deps; add the directory that holds it to ELEMENTS_PATH (colon-separated), or include an element that provides it`,
  });
}

function providedTwice(name: string, first: string, second: string): ElementError {
  const isOs = name === "operating-system";
  return new ElementError("provided-twice", `'${name}' is provided by both '${first}' and '${second}'`, {
    hint: isOs
      ? "a build has exactly one operating-system element; keep one of them"
      : `only one element may provide '${name}'; keep either '${first}' or '${second}' (and what pulls it in)`,
  });
}

function plural(list: readonly unknown[]): string {
  return list.length === 1 ? "" : "s";
}

/** C-locale string order (what `LC_ALL=C sort` and Python's sorted() give). */
export function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}
