package main

import (
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"

	"github.com/mcbridge/mcbridge/config"
)

// There is no Docker engine in CI: docker-compose.yml, the Dockerfile and
// the provisioning files are checked statically, for what breaks
// `docker compose up` (a missing file, a wrong host, a missing healthcheck).

// composeFile is the part of docker-compose.yml these tests read.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       *composeBuild     `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Ports       []string          `yaml:"ports"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Healthcheck *struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

type composeBuild struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
}

// mount is a bind mount from the repo into a container.
type mount struct{ source, target string }

func (s composeService) mounts(t *testing.T, name string) []mount {
	t.Helper()
	var out []mount
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || !strings.HasPrefix(parts[0], "./") {
			t.Errorf("service %s: volume %q is not a ./repo-path:container-path bind mount", name, v)
			continue
		}
		out = append(out, mount{source: path.Clean(parts[0]), target: parts[1]})
	}
	return out
}

// sourceOf returns the repo file mounted at the container path p, directly
// or inside a mounted directory.
func sourceOf(mounts []mount, p string) (string, bool) {
	for _, m := range mounts {
		if m.target == p {
			return m.source, true
		}
		if rel, ok := strings.CutPrefix(p, m.target+"/"); ok {
			return path.Join(m.source, rel), true
		}
	}
	return "", false
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	// Top-level keys from the node tree: the obsolete version key must not
	// be there (Compose v2 warns about it).
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	top := doc.Content[0]
	for i := 0; i < len(top.Content); i += 2 {
		if k := top.Content[i].Value; k == "version" {
			t.Errorf("docker-compose.yml line %d: no version: key (obsolete in the Compose specification)", top.Content[i].Line)
		}
	}
	var c composeFile
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return c
}

func TestDockerCompose(t *testing.T) {
	root := repoRoot(t)
	c := loadCompose(t)
	for _, name := range []string{"rabbitmq", "mcbridge", "prometheus", "grafana"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("docker-compose.yml has no service %q", name)
		}
	}
	for name, s := range c.Services {
		if s.Healthcheck == nil || len(s.Healthcheck.Test) == 0 {
			t.Errorf("service %s has no healthcheck", name)
		}
		for dep, d := range s.DependsOn {
			if _, ok := c.Services[dep]; !ok {
				t.Errorf("service %s depends on unknown service %s", name, dep)
			}
			if d.Condition != "service_healthy" {
				t.Errorf("service %s depends_on %s with condition %q, want service_healthy", name, dep, d.Condition)
			}
		}
		for _, m := range s.mounts(t, name) {
			if _, err := os.Stat(filepath.Join(root, m.source)); err != nil {
				t.Errorf("service %s mounts %s, which is not in the repo: %v", name, m.source, err)
			}
		}
	}

	// RabbitMQ with the management and prometheus plugins.
	rmq := c.Services["rabbitmq"]
	if !strings.HasPrefix(rmq.Image, "rabbitmq:") || !strings.Contains(rmq.Image, "management") {
		t.Errorf("rabbitmq image %q, want a rabbitmq:*-management tag", rmq.Image)
	}
	plugins, ok := sourceOf(rmq.mounts(t, "rabbitmq"), "/etc/rabbitmq/enabled_plugins")
	if !ok {
		t.Fatal("rabbitmq: no enabled_plugins file mounted at /etc/rabbitmq/enabled_plugins")
	}
	data, err := os.ReadFile(filepath.Join(root, plugins))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^\[[a-z_, ]*\]\.\s*$`).Match(data) ||
		!strings.Contains(string(data), "rabbitmq_management") || !strings.Contains(string(data), "rabbitmq_prometheus") {
		t.Errorf("%s = %q, want an Erlang list with rabbitmq_management and rabbitmq_prometheus", plugins, data)
	}

	// mcbridge: built from the Dockerfile, its config mounted, listening on
	// every interface, pointed at the rabbitmq service.
	mc := c.Services["mcbridge"]
	if mc.Build == nil || mc.Build.Context != "." || (mc.Build.Dockerfile != "" && mc.Build.Dockerfile != "Dockerfile") {
		t.Errorf("mcbridge build %+v, want context . and the Dockerfile", mc.Build)
	}
	if mc.DependsOn["rabbitmq"].Condition != "service_healthy" {
		t.Errorf("mcbridge must wait for a healthy rabbitmq")
	}
	i := slices.Index(mc.Command, "-config")
	if i < 0 || i+1 >= len(mc.Command) {
		t.Fatalf("mcbridge command %v has no -config FILE", mc.Command)
	}
	cfgSource, ok := sourceOf(mc.mounts(t, "mcbridge"), mc.Command[i+1])
	if !ok {
		t.Fatalf("mcbridge -config %s is not mounted from the repo", mc.Command[i+1])
	}
	cfg, err := config.LoadFile(filepath.Join(root, cfgSource))
	if err != nil {
		t.Fatalf("%s: %v", cfgSource, err)
	}
	for key, addr := range map[string]string{"listen": cfg.Listen, "metrics_listen": cfg.MetricsListen} {
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host != "0.0.0.0" {
			t.Errorf("%s %s = %q: inside a container it must listen on 0.0.0.0", cfgSource, key, addr)
		}
		if !publishes(mc.Ports, port) {
			t.Errorf("mcbridge does not publish %s port %s (ports %v)", key, port, mc.Ports)
		}
	}
	if len(cfg.AMQP.URLs) == 0 {
		t.Fatalf("%s: no amqp.urls", cfgSource)
	}
	u, err := url.Parse(cfg.AMQP.URLs[0].Raw())
	if err != nil {
		t.Fatal(err)
	}
	if u.Hostname() != "rabbitmq" || (u.Port() != "" && u.Port() != "5672") {
		t.Errorf("%s amqp url host %q, want the rabbitmq service on 5672", cfgSource, u.Host)
	}
	pass, _ := u.User.Password()
	if user := rmq.Environment["RABBITMQ_DEFAULT_USER"]; user != "" && (u.User.Username() != user || pass != rmq.Environment["RABBITMQ_DEFAULT_PASS"]) {
		t.Errorf("%s amqp user %q is not the RABBITMQ_DEFAULT_USER/PASS of the rabbitmq service (%q)", cfgSource, u.User.Username(), user)
	}
	targets := prometheusTargets(t, c)
	if _, port, _ := net.SplitHostPort(cfg.MetricsListen); !slices.Contains(targets, "mcbridge:"+port) {
		t.Errorf("prometheus does not scrape mcbridge:%s", port)
	}
	if !slices.Contains(targets, "rabbitmq:15692") {
		t.Errorf("prometheus does not scrape RabbitMQ's plugin at rabbitmq:15692")
	}
	checkGrafana(t, c)
}

func publishes(ports []string, port string) bool {
	for _, p := range ports {
		if strings.HasSuffix(p, ":"+port) {
			return true
		}
	}
	return false
}

// prometheusTargets reads compose's Prometheus config (mounted into the
// prometheus service) and returns its scrape targets; its rule files must be
// mounted next to it.
func prometheusTargets(t *testing.T, c composeFile) []string {
	t.Helper()
	p := c.Services["prometheus"]
	mounts := p.mounts(t, "prometheus")
	cfgPath := "/etc/prometheus/prometheus.yml"
	for _, a := range p.Command {
		if v, ok := strings.CutPrefix(a, "--config.file="); ok {
			cfgPath = v
		}
	}
	src, ok := sourceOf(mounts, cfgPath)
	if !ok {
		t.Fatalf("prometheus config %s is not mounted from the repo", cfgPath)
	}
	data, err := os.ReadFile(filepath.Join(repoRoot(t), src))
	if err != nil {
		t.Fatal(err)
	}
	var pc struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal(data, &pc); err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	for _, rf := range pc.RuleFiles {
		inContainer := rf
		if !path.IsAbs(rf) {
			inContainer = path.Join(path.Dir(cfgPath), rf)
		}
		rsrc, ok := sourceOf(mounts, inContainer)
		if !ok {
			t.Errorf("prometheus rule file %s is not mounted", inContainer)
			continue
		}
		if rsrc != alertsFile {
			t.Errorf("prometheus rule file %s comes from %s, want %s", inContainer, rsrc, alertsFile)
		}
	}
	if len(pc.RuleFiles) == 0 {
		t.Errorf("%s loads no rule files (want %s)", src, alertsFile)
	}
	var targets []string
	for _, sc := range pc.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, tg := range st.Targets {
				host, _, _ := net.SplitHostPort(tg)
				if _, ok := c.Services[host]; !ok {
					t.Errorf("prometheus job %s scrapes %s, which is no compose service", sc.JobName, tg)
				}
				targets = append(targets, tg)
			}
		}
	}
	return targets
}

// checkGrafana: the provisioning folders are mounted, the datasource is
// the prometheus service, and the dashboard provider's folder holds the
// repo's dashboards.
func checkGrafana(t *testing.T, c composeFile) {
	t.Helper()
	root := repoRoot(t)
	g := c.Services["grafana"]
	mounts := g.mounts(t, "grafana")
	if g.DependsOn["prometheus"].Condition != "service_healthy" {
		t.Errorf("grafana must wait for a healthy prometheus")
	}

	dsDir, ok := sourceOf(mounts, "/etc/grafana/provisioning/datasources")
	if !ok {
		t.Fatal("grafana: /etc/grafana/provisioning/datasources is not mounted")
	}
	files, _ := filepath.Glob(filepath.Join(root, dsDir, "*.yml"))
	if len(files) == 0 {
		t.Fatalf("no datasource provisioning file in %s", dsDir)
	}
	var promDS bool
	for _, f := range files {
		var ds struct {
			APIVersion  int `yaml:"apiVersion"`
			Datasources []struct {
				Name, Type, URL, UID, Access string
			} `yaml:"datasources"`
		}
		data, _ := os.ReadFile(f)
		if err := yaml.Unmarshal(data, &ds); err != nil || ds.APIVersion != 1 {
			t.Errorf("%s: apiVersion %d, %v", f, ds.APIVersion, err)
		}
		for _, d := range ds.Datasources {
			u, err := url.Parse(d.URL)
			if d.Type != "prometheus" || err != nil {
				continue
			}
			promDS = true
			if _, ok := c.Services[u.Hostname()]; !ok || u.Hostname() != "prometheus" || u.Port() != "9090" {
				t.Errorf("%s: datasource %s url %s, want http://prometheus:9090", f, d.Name, d.URL)
			}
		}
	}
	if !promDS {
		t.Errorf("no prometheus datasource is provisioned")
	}

	dbDir, ok := sourceOf(mounts, "/etc/grafana/provisioning/dashboards")
	if !ok {
		t.Fatal("grafana: /etc/grafana/provisioning/dashboards is not mounted")
	}
	files, _ = filepath.Glob(filepath.Join(root, dbDir, "*.yml"))
	if len(files) == 0 {
		t.Fatalf("no dashboard provisioning file in %s", dbDir)
	}
	found := map[string]bool{}
	for _, f := range files {
		var prov struct {
			APIVersion int `yaml:"apiVersion"`
			Providers  []struct {
				Name    string `yaml:"name"`
				Type    string `yaml:"type"`
				Options struct {
					Path string `yaml:"path"`
				} `yaml:"options"`
			} `yaml:"providers"`
		}
		data, _ := os.ReadFile(f)
		if err := yaml.Unmarshal(data, &prov); err != nil || prov.APIVersion != 1 || len(prov.Providers) == 0 {
			t.Errorf("%s: apiVersion %d, %d providers, %v", f, prov.APIVersion, len(prov.Providers), err)
		}
		for _, p := range prov.Providers {
			if p.Type != "file" {
				continue
			}
			for file := range loadDashboards(t) {
				if src, ok := sourceOf(mounts, path.Join(p.Options.Path, file)); ok && src == path.Join("dashboards", file) {
					found[file] = true
				}
			}
		}
	}
	for file := range loadDashboards(t) {
		if !found[file] {
			t.Errorf("dashboards/%s is not mounted under any file provider's path", file)
		}
	}
}

// dockerStage is one FROM ... block of the Dockerfile.
type dockerStage struct {
	from, name string
	lines      []string // instructions after FROM, continuations joined
}

func parseDockerfile(t *testing.T) []dockerStage {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	var stages []dockerStage
	text := strings.ReplaceAll(string(data), "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if strings.EqualFold(fields[0], "FROM") {
			st := dockerStage{from: fields[1]}
			if len(fields) >= 4 && strings.EqualFold(fields[2], "AS") {
				st.name = fields[3]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			if !strings.EqualFold(fields[0], "ARG") {
				t.Fatalf("Dockerfile: %q before the first FROM", line)
			}
			continue
		}
		stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, line)
	}
	return stages
}

// runPackage is the package that make run (the README's run command,
// scripts/run.sh) builds and runs.
func runPackage(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "scripts", "run.sh"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go build -o "\$bin" (\./cmd/[a-z]+)\s*$`).FindSubmatch(data)
	if m == nil {
		t.Fatal("scripts/run.sh has no `go build -o \"$bin\" ./cmd/...` line")
	}
	return string(m[1])
}

// The Dockerfile builds, statically, the same package make run runs, in a
// build stage, and runs it as a non-root user in a small final image.
func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t)
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stage(s), want a build stage and a final stage", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]
	if !strings.HasPrefix(build.from, "golang:") {
		t.Errorf("build stage FROM %s, want a golang image", build.from)
	}
	// The toolchain image matches go.mod's go line (major.minor).
	gomod, _ := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	if m := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(gomod); m == nil || !strings.HasPrefix(build.from, "golang:"+string(m[1])) {
		t.Errorf("build stage FROM %s does not match go.mod's go %s", build.from, m[1])
	}

	pkg := runPackage(t)
	var buildLine string
	for _, l := range build.lines {
		if strings.HasPrefix(l, "RUN") && strings.Contains(l, "go build") {
			buildLine = l
		}
	}
	if buildLine == "" {
		t.Fatal("build stage has no RUN ... go build")
	}
	if !strings.Contains(buildLine, "CGO_ENABLED=0") {
		t.Errorf("go build without CGO_ENABLED=0 (the final image has no libc to link against): %s", buildLine)
	}
	if !regexp.MustCompile(`\s` + regexp.QuoteMeta(pkg) + `(\s|$)`).MatchString(buildLine) {
		t.Errorf("the Dockerfile builds something other than %s, which make run runs: %s", pkg, buildLine)
	}
	out := regexp.MustCompile(`-o\s+(\S+)`).FindStringSubmatch(buildLine)
	if out == nil {
		t.Fatalf("go build has no -o: %s", buildLine)
	}

	small := regexp.MustCompile(`^(scratch|gcr\.io/distroless/static(-debian\d+)?(:[\w.-]+)?|alpine(:[\w.-]+)?)$`)
	if !small.MatchString(final.from) {
		t.Errorf("final stage FROM %s, want scratch, distroless/static or alpine", final.from)
	}
	var copied, user, entry string
	for _, l := range final.lines {
		f := strings.Fields(l)
		switch strings.ToUpper(f[0]) {
		case "COPY":
			if strings.HasPrefix(f[1], "--from="+build.name) && f[2] == out[1] {
				copied = f[len(f)-1]
			}
		case "USER":
			user = f[1]
		case "ENTRYPOINT":
			entry = l
		}
	}
	if copied == "" {
		t.Errorf("final stage does not COPY --from=%s %s", build.name, out[1])
	}
	if name, _, _ := strings.Cut(user, ":"); name == "" || name == "root" || name == "0" {
		t.Errorf("final stage USER %q, want a non-root user", user)
	}
	if !strings.Contains(entry, copied) {
		t.Errorf("ENTRYPOINT %q does not run the copied binary %s", entry, copied)
	}
}
