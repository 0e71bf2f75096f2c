// Quoting for the shells vmdib writes to (the guest's bash over SSH, generated scripts, env files): values are data.

/** A bash word that expands to exactly `s`, whatever it contains. Safe-looking words stay bare for readability. */
export function shellQuote(s: string): string {
  if (s.includes("\0")) throw new RangeError("a NUL byte cannot be passed through a shell");
  if (/^[A-Za-z0-9_/.,:=@%+-]+$/.test(s)) return s;
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** An argv as one command line for a remote shell: each word reaches the command unchanged. */
export function shellJoin(args: readonly string[]): string {
  return args.map(shellQuote).join(" ");
}
