package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/c2d-project/c2d/cloud/twin"
)

// twinCalls is what `c2d twin` needs from the hub (part of hubClient).
type twinCalls interface {
	GetTwin(ctx context.Context, id string) (twin.Twin, error)
	UpdateTwin(ctx context.Context, id string, patch any, ifMatch string) (twin.Twin, error)
}

func (a *app) twinCommand() *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "twin",
		Short: "Show a device's twin, or set its desired properties and tags",
		Long: `A device twin (Azure's model) holds tags (the service's labels), desired properties (what the
service wants the board to do) and reported properties (what the board says it is doing: the c2d
agent reports its outputs, inputs, version and config hash).`,
	})
	cmd.AddCommand(a.twinShow(), a.twinSet())
	return cmd
}

func (a *app) twinShow() *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Print a device's twin",
		Long: `Print a device's twin: tags, desired and reported properties with their versions. -o json prints
Azure's twin JSON, $metadata ($lastUpdated of every property) included.

Needs a policy with RegistryRead (registryRead, registryReadWrite or iothubowner).`,
		Example:           "  c2d twin show pi-1\n  c2d twin show pi-1 -o json | jq .properties.reported.outputs",
		Args:              exactArgs("ID"),
		ValidArgsFunction: a.completeDevices,
		RunE: a.deviceRunE(needRegistryRead, func(cmd *cobra.Command, ctx context.Context, c hubClient, id string) error {
			t, err := c.GetTwin(ctx, id)
			if err != nil {
				return err
			}
			if a.json() {
				return writeJSON(cmd.OutOrStdout(), t)
			}
			return printTwin(cmd.OutOrStdout(), t)
		}),
	}
}

func (a *app) twinSet() *cobra.Command {
	var desired, tags []string
	var etag string
	cmd := &cobra.Command{
		Use:   "set ID (--desired PATH=VALUE | --tags PATH=VALUE)...",
		Short: "Merge desired properties or tags into a device's twin",
		Long: `Merge desired properties and tags into a device's twin. PATH is dotted (outputs.relay1 sets
{"outputs":{"relay1":…}}); VALUE is JSON when it is a number, true, false or null (null deletes the
key), else a string. Several settings go in one flag separated by ';', or in repeated flags. A
connected board hears the change at once; the others read it when they connect.

--etag makes the update conditional (it fails with PreconditionFailed if the twin changed since).

Needs a policy with RegistryWrite (registryReadWrite or iothubowner).`,
		Example: `  c2d twin set pi-1 --desired 'outputs.relay1=on'
  c2d twin set pi-1 --tags 'site=north;floor=2'
  c2d twin set pi-1 --desired 'outputs.relay1=null'     # delete the key`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: a.completeDevices,
		RunE: a.deviceRunE(needRegistryWrite, func(cmd *cobra.Command, ctx context.Context, c hubClient, id string) error {
			if len(desired) == 0 && len(tags) == 0 {
				return usageErrorf("nothing to set: give --desired PATH=VALUE or --tags PATH=VALUE")
			}
			patch := map[string]any{}
			if len(tags) > 0 {
				o, err := pathValues("--tags", tags)
				if err != nil {
					return err
				}
				patch["tags"] = o
			}
			if len(desired) > 0 {
				o, err := pathValues("--desired", desired)
				if err != nil {
					return err
				}
				patch["properties"] = map[string]any{"desired": o}
			}
			t, err := c.UpdateTwin(ctx, id, patch, etag)
			if err != nil {
				return err
			}
			if a.json() {
				return writeJSON(cmd.OutOrStdout(), t)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Twin of %s updated: desired $version %v, etag %s.\n", id, t.Properties.Desired["$version"], t.ETag)
			return err
		}),
	}
	cmd.Flags().StringArrayVar(&desired, "desired", nil, "desired properties 'path=value;path2=value2' (repeatable)")
	cmd.Flags().StringArrayVar(&tags, "tags", nil, "tags 'path=value;path2=value2' (repeatable)")
	cmd.Flags().StringVar(&etag, "etag", "", "update only if the twin still has this etag")
	return cmd
}

// pathValues turns 'a.b=1;c=x' settings into a nested object.
func pathValues(flag string, settings []string) (map[string]any, error) {
	out := map[string]any{}
	for _, s := range settings {
		for _, kv := range strings.Split(s, ";") {
			if strings.TrimSpace(kv) == "" {
				continue
			}
			path, val, ok := strings.Cut(kv, "=")
			if !ok || path == "" {
				return nil, usageErrorf("%s %q: want PATH=VALUE, e.g. outputs.relay1=on", flag, kv)
			}
			var v any = val
			var j any
			if json.Unmarshal([]byte(val), &j) == nil {
				switch j.(type) {
				case nil, bool, float64:
					v = j
				}
			}
			keys := strings.Split(path, ".")
			node := out
			for i, k := range keys {
				if k == "" {
					return nil, usageErrorf("%s %q: empty key in the path", flag, path)
				}
				if i == len(keys)-1 {
					node[k] = v
					break
				}
				next, ok := node[k].(map[string]any)
				if !ok {
					next = map[string]any{}
					node[k] = next
				}
				node = next
			}
		}
	}
	return out, nil
}

func printTwin(w io.Writer, t twin.Twin) error {
	if err := fields(w, "Device", t.DeviceID, "Status", t.Status, "Connection", t.ConnectionState,
		"Last activity", t.LastActivityTime, "Etag", t.ETag); err != nil {
		return err
	}
	for _, sec := range []struct {
		name string
		o    map[string]any
	}{{"Tags", t.Tags}, {"Desired", t.Properties.Desired}, {"Reported", t.Properties.Reported}} {
		title := sec.name
		if v, ok := sec.o["$version"]; ok {
			title += fmt.Sprintf(" ($version %v)", v)
		}
		fmt.Fprintf(w, "\n%s:\n", title)
		lines := flatten("", sec.o)
		if len(lines) == 0 {
			fmt.Fprintln(w, "  none")
		}
		for _, l := range lines {
			fmt.Fprintln(w, "  "+l)
		}
	}
	return nil
}

// flatten lists leaves as "a.b = value", sorted, without $version and $metadata.
func flatten(prefix string, o map[string]any) []string {
	var out []string
	keys := make([]string, 0, len(o))
	for k := range o {
		if !strings.HasPrefix(k, "$") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		if sub, ok := o[k].(map[string]any); ok {
			out = append(out, flatten(p, sub)...)
			continue
		}
		b, _ := json.Marshal(o[k])
		out = append(out, p+" = "+string(b))
	}
	return out
}
