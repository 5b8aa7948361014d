// Package parse turns a chat message into a command's typed arguments.
//
// It works in two steps. [Split] cuts the line into words with shell-like
// quoting and separates the free text after a bare "--". [Bind] assigns the
// words after the command name to a command's spec: flags in their
// --name=value, --name value, --name and --no-name forms, positional
// arguments in order, and the text; every value is checked and
// canonicalised with [spec.CheckValue], the same check the service repeats.
//
// Hand-written rather than using a shell-words library because the grammar
// differs from a shell's in ways people in a chat need: smart quotes and
// non-breaking spaces pasted from Slack or macOS are read as their ASCII
// forms, "--" starts free text that is kept raw (quotes and all), positions
// in errors are byte offsets into what the person typed, and nothing is
// expanded ($, `, ~, globs): no argument ever reaches a shell.
//
// Every error is a *Error whose message is a sentence for the person who
// typed the command, usually with the command's usage.
package parse
