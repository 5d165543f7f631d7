import { InvalidArgumentError } from "../errors.ts";
import { quote } from "../limits.ts";

/** Secret names: like task ids, 1-128 characters of [A-Za-z0-9._-], starting with a letter or digit. */
export const SECRET_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** Secret keys: portable environment variable names. */
export const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** One `KEY=VALUE` string must fit Linux's MAX_ARG_STRLEN (with its NUL). */
export const MAX_PAIR_BYTES = 128 * 1024 - 1;
/** All pairs of one secret together. */
export const MAX_SECRET_BYTES = 1024 * 1024;

/** Throws InvalidArgument unless `name` is a valid secret name. */
export function checkSecretName(name: string): void {
  if (!SECRET_NAME.test(name)) {
    throw new InvalidArgumentError(
      `secret name ${quote(name)} must be 1-128 characters of [A-Za-z0-9._-], starting with a letter or digit`,
    );
  }
}

/**
 * Checks a secret's data: keys are environment variable names, values have no
 * NUL, sizes within the limits. Error messages name keys, never values.
 */
export function checkSecretData(name: string, data: ReadonlyMap<string, string>): void {
  let total = 0;
  for (const [key, value] of data) {
    if (!ENV_KEY.test(key)) {
      throw new InvalidArgumentError(
        `secret ${name}: key ${quote(key)} is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)`,
      );
    }
    if (typeof value !== "string") {
      throw new InvalidArgumentError(`secret ${name}: the value of ${quote(key)} is not a string`);
    }
    if (value.includes("\0")) {
      throw new InvalidArgumentError(
        `secret ${name}: the value of ${quote(key)} contains a NUL character`,
      );
    }
    const n = Buffer.byteLength(key) + 1 + Buffer.byteLength(value);
    if (n > MAX_PAIR_BYTES) {
      throw new InvalidArgumentError(
        `secret ${name}: ${quote(key)}=VALUE takes ${n} bytes, more than an environment string may (${MAX_PAIR_BYTES})`,
      );
    }
    total += n + 1;
  }
  if (total > MAX_SECRET_BYTES) {
    throw new InvalidArgumentError(
      `secret ${name}: its pairs take ${total} bytes, more than ${MAX_SECRET_BYTES}`,
    );
  }
}
