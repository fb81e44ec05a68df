package headwatertest

import (
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// emitYAML writes a node tree back as block-style YAML, each scalar as it was written: a
// plain scalar as its text (YAML encoders quote plain text such as 2024-01-01T00:00:00Z or
// 1:30 that they would type differently; the host reads such scalars as text, so they stay
// plain), a quoted scalar in the same quotes (block scalars in double quotes). Aliases are
// expanded and comments dropped.
func emitYAML(doc *yaml.Node) string {
	var b strings.Builder
	n := doc
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	emitBlock(&b, n, 0)
	return b.String()
}

// emitBlock writes n, a mapping or sequence, at indent; anything else on a line of its own.
func emitBlock(b *strings.Builder, n *yaml.Node, indent int) {
	n = deref(n)
	pad := strings.Repeat(" ", indent)
	switch {
	case n.Kind == yaml.MappingNode && len(n.Content) > 0:
		for i := 0; i+1 < len(n.Content); i += 2 {
			b.WriteString(pad + scalarText(deref(n.Content[i])) + ":")
			emitValue(b, n.Content[i+1], indent)
		}
	case n.Kind == yaml.SequenceNode && len(n.Content) > 0:
		for _, item := range n.Content {
			item = deref(item)
			if nested(item) {
				// The item's first line goes after the dash: "- key: value".
				var inner strings.Builder
				emitBlock(&inner, item, indent+2)
				b.WriteString(pad + "- " + strings.TrimPrefix(inner.String(), pad+"  "))
				continue
			}
			b.WriteString(pad + "-")
			emitInline(b, item)
		}
	default:
		b.WriteString(pad + inline(n) + "\n")
	}
}

// emitValue writes a mapping value after its "key:".
func emitValue(b *strings.Builder, v *yaml.Node, indent int) {
	v = deref(v)
	if nested(v) {
		b.WriteString("\n")
		emitBlock(b, v, indent+2)
		return
	}
	emitInline(b, v)
}

func emitInline(b *strings.Builder, v *yaml.Node) {
	if text := inline(v); text != "" {
		b.WriteString(" " + text)
	}
	b.WriteString("\n")
}

func nested(n *yaml.Node) bool {
	return (n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode) && len(n.Content) > 0
}

// inline is a scalar's text, or {} / [] for an empty collection.
func inline(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "{}"
	case yaml.SequenceNode:
		return "[]"
	}
	return scalarText(n)
}

func scalarText(n *yaml.Node) string {
	tag := ""
	if n.Style&yaml.TaggedStyle != 0 && n.Tag != "" {
		tag = n.Tag + " "
	}
	v := n.Value
	multiline := strings.ContainsAny(v, "\n\r")
	switch {
	case n.Style&yaml.SingleQuotedStyle != 0 && !multiline:
		return tag + "'" + strings.ReplaceAll(v, "'", "''") + "'"
	case n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) != 0 || multiline:
		return tag + strconv.Quote(v)
	}
	return strings.TrimSpace(tag + v) // plain: as written ("" for an empty value, which is null)
}

func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}
