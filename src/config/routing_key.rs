//! `amqp.routing_key`: a template such as `{environment}.{type}`, parsed once at start.

/// One segment of a routing-key template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Environment,
    Type,
    Endpoint,
}

/// `{environment}.{type}` and friends, parsed once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingKeyTemplate(Vec<Segment>);

impl RoutingKeyTemplate {
    pub(crate) fn parse(template: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                segments.push(Segment::Literal(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| "unclosed '{'".to_owned())?;
            let name = &rest[open + 1..open + close];
            segments.push(match name {
                "environment" => Segment::Environment,
                "type" => Segment::Type,
                "endpoint" => Segment::Endpoint,
                other => {
                    return Err(format!(
                        "unknown placeholder {{{other}}}; use {{environment}}, {{type}} or {{endpoint}}"
                    ));
                }
            });
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err("unmatched '}'".to_owned());
        }
        if !rest.is_empty() {
            segments.push(Segment::Literal(rest.to_owned()));
        }
        Ok(Self(segments))
    }

    pub(crate) fn render(&self, environment: &str, event_type: &str, endpoint: &str) -> String {
        self.0
            .iter()
            .map(|segment| match segment {
                Segment::Literal(s) => s.as_str(),
                Segment::Environment => environment,
                Segment::Type => event_type,
                Segment::Endpoint => endpoint,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_key_templates() {
        let t = RoutingKeyTemplate::parse("gate.{endpoint}.{environment}.{type}").expect("valid");
        assert_eq!(
            t.render("live", "kyc.required", "main"),
            "gate.main.live.kyc.required"
        );
        assert!(RoutingKeyTemplate::parse("{nope}").is_err());
        assert!(RoutingKeyTemplate::parse("{type").is_err());
        assert!(RoutingKeyTemplate::parse("a}").is_err());
    }
}
