// The score options of a call (softcap, alibi_slopes, sinks, ...), read row
// by row of their one table (pyattn/score_options.h: kScoreOptions) from the
// one object the Python layer passes for all of them: None (no option set:
// nothing to read) or a dict keyword -> value, a value of None meaning off.
// Nothing here names an option: a new one is a row of the table.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "pyattn/score_options.h"

namespace pyattn::bindings {

namespace py = pybind11;

// A per-head option's values, checked, in the compute dtype, over the
// user's batch (per_head in call_args.h); its caller lays it out over the
// core's batch into v.*option->per_head.
struct ScoreArray {
  const ScoreOption* option;
  py::handle shown;  // what the caller passed (out's overlap check)
  py::array array;
};

// Reads `options` (None or a dict) into `v`, row by row of the table:
//   scalar    TypeError unless a real number (not a bool); ValueError
//             unless the row's rule holds; its field set;
//   per_head  per_head() over `batch` in the compute dtype `cdt` (TypeError /
//             ValueError naming it), appended to `arrays` (in table order).
// TypeError for a keyword that is not a score option.
void read_score_options(py::handle options, const std::vector<py::ssize_t>& batch, const py::dtype& cdt,
                        ScoreVariants* v, std::vector<ScoreArray>* arrays);

// The row of the option called `name`, or nullptr.
const ScoreOption* score_option(const std::string& name);

// The ValueError of a value that breaks `option`'s rule ("<name> <must>,
// got <repr of shown>", "{dtype}" in must being `dtype`'s name).
py::value_error score_value_error(const ScoreOption& option, py::handle shown, const py::dtype& dtype);

// Registers SCORE_OPTIONS: {keyword: "scalar" or "per_head"}, in table order.
void register_score_args(py::module_& m);

}  // namespace pyattn::bindings
