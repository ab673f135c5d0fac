/*
 * A small JSON Schema (2020-12) validator for the offline page: the keywords the registry's
 * shipped recipient and vaccination schemas use, as the server sends them
 * (`/ui/offline/data` "schemas": `$ref`s inlined, annotations removed): type, properties,
 * required, additionalProperties (false or a schema), items, uniqueItems, enum, const,
 * pattern, minLength/maxLength (in code points), minimum/maximum, minItems/maxItems, and
 * format "date" / "date-time". Other formats ("phone", "email": the registry's own checks)
 * are left to the server, which answers with the field's pointer when it refuses one.
 *
 * OfflineValidate.validate(schema, value) -> [{pointer, message, keyword}], like the API's
 * problem+json "errors".
 */
(function (root) {
  "use strict";

  function typeOf(v) {
    if (v === null) return "null";
    if (Array.isArray(v)) return "array";
    if (typeof v === "number") return Number.isInteger(v) ? "integer" : "number";
    return typeof v;
  }

  function typeMatches(want, v) {
    var t = typeOf(v);
    return want === t || (want === "number" && t === "integer");
  }

  var DATE = /^(\d{4})-(\d{2})-(\d{2})$/;
  var DATE_TIME = /^(\d{4}-\d{2}-\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;

  function validDate(text) {
    var m = DATE.exec(text);
    if (!m) return false;
    var y = +m[1], mo = +m[2], d = +m[3];
    if (mo < 1 || mo > 12 || d < 1) return false;
    var days = [31, (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0 ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    return d <= days[mo - 1];
  }

  function validDateTime(text) {
    var m = DATE_TIME.exec(text);
    return !!m && validDate(m[1]) && +m[2] < 24 && +m[3] < 60 && +m[4] < 61;
  }

  function same(a, b) { return JSON.stringify(a) === JSON.stringify(b); }

  function escape(token) { return String(token).replace(/~/g, "~0").replace(/\//g, "~1"); }

  function check(schema, v, pointer, out) {
    if (!schema || typeof schema !== "object") return;
    if (schema.type !== undefined) {
      var types = Array.isArray(schema.type) ? schema.type : [schema.type];
      if (!types.some(function (t) { return typeMatches(t, v); })) {
        out.push({ pointer: pointer, message: "must be " + types.join(" or "), keyword: "type" });
        return;
      }
    }
    if (schema.enum && !schema.enum.some(function (e) { return same(e, v); })) {
      out.push({ pointer: pointer, message: "must be one of " + schema.enum.join(", "), keyword: "enum" });
    }
    if ("const" in schema && !same(schema.const, v)) {
      out.push({ pointer: pointer, message: "must be " + JSON.stringify(schema.const), keyword: "const" });
    }
    var t = typeOf(v);
    if (t === "string") {
      var n = Array.from(v).length;
      if (schema.minLength !== undefined && n < schema.minLength) {
        out.push({ pointer: pointer, message: schema.minLength === 1 ? "must not be empty" : "must be at least " + schema.minLength + " characters", keyword: "minLength" });
      }
      if (schema.maxLength !== undefined && n > schema.maxLength) {
        out.push({ pointer: pointer, message: "must be at most " + schema.maxLength + " characters", keyword: "maxLength" });
      }
      if (schema.pattern !== undefined && !new RegExp(schema.pattern, "u").test(v)) {
        out.push({ pointer: pointer, message: "does not match the expected pattern", keyword: "pattern" });
      }
      if (schema.format === "date" && !validDate(v)) {
        out.push({ pointer: pointer, message: "must be a date (YYYY-MM-DD)", keyword: "format" });
      }
      if (schema.format === "date-time" && !validDateTime(v)) {
        out.push({ pointer: pointer, message: "must be a date and time with a time zone", keyword: "format" });
      }
    }
    if (t === "integer" || t === "number") {
      if (schema.minimum !== undefined && v < schema.minimum) {
        out.push({ pointer: pointer, message: "must be at least " + schema.minimum, keyword: "minimum" });
      }
      if (schema.maximum !== undefined && v > schema.maximum) {
        out.push({ pointer: pointer, message: "must be at most " + schema.maximum, keyword: "maximum" });
      }
    }
    if (t === "array") {
      if (schema.minItems !== undefined && v.length < schema.minItems) {
        out.push({ pointer: pointer, message: "must have at least " + schema.minItems + " items", keyword: "minItems" });
      }
      if (schema.maxItems !== undefined && v.length > schema.maxItems) {
        out.push({ pointer: pointer, message: "must have at most " + schema.maxItems + " items", keyword: "maxItems" });
      }
      if (schema.uniqueItems) {
        var seen = v.map(function (x) { return JSON.stringify(x); });
        if (new Set(seen).size !== seen.length) {
          out.push({ pointer: pointer, message: "must not repeat an item", keyword: "uniqueItems" });
        }
      }
      if (schema.items) {
        v.forEach(function (item, i) { check(schema.items, item, pointer + "/" + i, out); });
      }
    }
    if (t === "object") {
      var props = schema.properties || {};
      (schema.required || []).forEach(function (name) {
        if (!(name in v)) out.push({ pointer: pointer + "/" + escape(name), message: "is required", keyword: "required" });
      });
      Object.keys(v).forEach(function (name) {
        var sub = props[name];
        if (sub !== undefined) {
          check(sub, v[name], pointer + "/" + escape(name), out);
        } else if (schema.additionalProperties === false) {
          out.push({ pointer: pointer + "/" + escape(name), message: "is not a field of this record", keyword: "additionalProperties" });
        } else if (schema.additionalProperties && typeof schema.additionalProperties === "object") {
          check(schema.additionalProperties, v[name], pointer + "/" + escape(name), out);
        }
      });
    }
  }

  function validate(schema, value) {
    var out = [];
    check(schema, value, "", out);
    return out;
  }

  root.OfflineValidate = { validate: validate };
})(typeof self !== "undefined" ? self : this);
