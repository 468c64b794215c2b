// The advanced options of both training forms. Which options exist comes from the server: the form schema
// of `POST /train` in the OpenAPI document it serves. The template (#train-options-template) gives the
// options it knows their wording; an option it lacks gets a control made from its schema, and a control
// whose option the server no longer takes is dropped, so the page offers exactly the server's options.

import { getJson } from "./api.js";
import { $, $$, make } from "./ui.js";

// Fields of the form that are no training option: the classes and their photos, and what only HTTP adds.
const NOT_OPTIONS = ["archive", "wait", "skip_invalid"];
const CLASS_FIELD = /^(label|files)\d+$/;

let optionSchemas = null;

/** The schema of each training option, by field name (asked once for both forms). */
function trainOptionSchemas() {
  optionSchemas ??= getJson("/openapi.json").then((spec) => {
    const form = spec.paths["/train"].post.requestBody.content["multipart/form-data"].schema;
    return Object.fromEntries(
      Object.entries(form.properties).filter(([name]) => !NOT_OPTIONS.includes(name) && !CLASS_FIELD.test(name)),
    );
  });
  return optionSchemas;
}

/** Put the advanced options where `placeholder` is, then match them to the server's options;
 * `testidPrefix` tells the two forms' controls apart (`dataset-class-weighting-input`). */
export async function placeTrainOptions(placeholder, testidPrefix = "") {
  const options = $("#train-options-template").content.firstElementChild.cloneNode(true);
  const form = placeholder.closest("form");
  placeholder.replaceWith(options);
  const advanced = $(".advanced", options);
  try {
    matchOptions(advanced, form, await trainOptionSchemas());
  } catch (error) {
    advanced.append(make("p", { className: "muted small", textContent: `The server's other options could not be read: ${error.message}` }));
  }
  for (const control of $$("[name]", advanced)) control.dataset.testid = `${testidPrefix}${control.name.replaceAll("_", "-")}-input`;
  options.dataset.ready = "true";
}

function matchOptions(advanced, form, schemas) {
  for (const control of $$("[name]", advanced)) {
    if (!(control.name in schemas)) control.closest("label").remove();
  }
  for (const [name, schema] of Object.entries(schemas)) {
    if (!form.elements.namedItem(name)) advanced.append(optionControl(name, schema));
  }
}

/** A labelled control for one option: a select for a choice or a flag (off/on: an unticked checkbox would
 * send nothing, leaving an option that defaults to on switched on), else an input. */
function optionControl(name, property) {
  const schema = { ...property, ...(property.anyOf?.find((s) => s.type !== "null") ?? {}) };
  const words = name.replaceAll("_", " ");
  const label = make("label", { title: property.description ?? "" });
  label.append(`${words[0].toUpperCase()}${words.slice(1)}`);
  if (schema.type === "boolean") label.append(choice(name, [false, true], schema.default ?? false, (on) => (on ? "on" : "off")));
  else if (schema.enum) label.append(choice(name, schema.enum, schema.default, String));
  else label.append(input(name, schema));
  return label;
}

function choice(name, values, selected, text) {
  const select = make("select", { name });
  for (const value of values) {
    select.append(make("option", { value: String(value), textContent: text(value), selected: value === selected }));
  }
  return select;
}

function input(name, schema) {
  const numeric = schema.type === "integer" || schema.type === "number";
  const field = make("input", { name, type: numeric ? "number" : "text" });
  if (numeric) field.step = schema.type === "integer" ? "1" : "any";
  if (schema.minimum !== undefined) field.min = schema.minimum;
  if (schema.maximum !== undefined) field.max = schema.maximum;
  if (schema.maxLength !== undefined) field.maxLength = schema.maxLength;
  if (schema.default === undefined || schema.default === null) field.placeholder = "server default";
  else field.value = schema.default;
  return field;
}
