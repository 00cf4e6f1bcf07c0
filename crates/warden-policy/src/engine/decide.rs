//! The decision on one step.
//!
//! A decision runs in two passes over the policies of the step's action.
//! The plain policies decide allow or deny. When they allow, the hold
//! policies run: a matching hold policy turns the allow into a hold. Any
//! evaluation error in either pass denies, because Cedar skips a policy
//! whose evaluation fails and a skipped `forbid` would otherwise let the
//! step through.

use std::collections::{BTreeSet, HashMap};

use cedar_policy::{
    AuthorizationError, Context, Decision as CedarDecision, Entities, Entity, EntityUid, PolicySet,
    Request, RestrictedExpression,
};
use serde_json::Value;

use super::{ActionPolicies, CompiledRoute, CompiledTool, GATEWAY_ID, PolicyEngine, PolicyTexts};
use crate::arguments::convert::convert_arguments;

use crate::{
    ARGUMENTS_POLICY_ID, Decision, Outcome, REQUEST_POLICY_ID, Step, StepRequest, TaskContext,
    UNKNOWN_TOOL_POLICY_ID,
};

/// The fields of a [`Step::CallModel`].
struct ModelCall<'a> {
    provider: &'a str,
    model: &'a str,
    stream: bool,
    max_tokens: i64,
    tools: &'a [String],
    usage: crate::ModelUsage,
}

/// The fields of a [`Step::HttpRequest`] besides the route.
struct HttpCall<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a [(String, String)],
    body: &'a Value,
    has_body: bool,
    content_type: &'a str,
    destination: crate::Destination<'a>,
    memory: &'a crate::TaskMemory,
}

/// The parts of a Cedar request that differ between steps.
struct StepParts<'a> {
    /// The action and its policies.
    action: &'a ActionPolicies,
    /// The subset of the action's plain policies that can apply, when path
    /// guards left some out.
    plain: Option<std::sync::Arc<PolicySet>>,
    resource: EntityUid,
    /// Context attributes besides `environment`.
    context: Vec<(String, RestrictedExpression)>,
    /// Entities besides the agent and the action.
    entities: Vec<Entity>,
    /// Description of the step for reasons, e.g. "calling tool fs__read_file".
    description: String,
}

impl PolicyEngine {
    /// Decides one step of a task.
    ///
    /// Never fails: an unknown tool, arguments that do not fit the tool's
    /// schema, a request that cannot be built and any policy evaluation
    /// error all deny, with the error in [`Outcome::errors`].
    pub fn decide(&self, request: &StepRequest<'_>) -> Outcome {
        let task = request.task;
        match request.step {
            Step::StartTask { ttl_seconds } => self.decide_start_task(task, ttl_seconds),
            Step::ListTool { tool } => match self.tools.get(tool) {
                Some(compiled) => self.decide_list_tool(task, compiled),
                None => unknown_tool(tool),
            },
            Step::CallTool {
                tool,
                arguments,
                model_requested,
                memory,
            } => match self.tools.get(tool) {
                Some(compiled) => {
                    self.decide_call_tool(task, compiled, arguments, model_requested, memory)
                }
                None => unknown_tool(tool),
            },
            Step::CallModel {
                provider,
                model,
                stream,
                max_tokens,
                tools,
                usage,
            } => self.decide_call_model(
                task,
                &ModelCall {
                    provider,
                    model,
                    stream,
                    max_tokens,
                    tools,
                    usage,
                },
            ),
            Step::ReadResource { server, uri } => self.decide_read_resource(task, server, uri),
            Step::GetPrompt { server, name } => self.decide_get_prompt(task, server, name),
            Step::ServerRequest {
                server,
                method,
                tool,
            } => self.decide_server_request(task, server, method, tool),
            Step::HttpRequest {
                route,
                method,
                path,
                query,
                body,
                has_body,
                content_type,
                destination,
                memory,
            } => match self.routes.get(route) {
                Some(compiled) => self.decide_http(
                    task,
                    compiled,
                    &HttpCall {
                        method,
                        path,
                        query,
                        body,
                        has_body,
                        content_type,
                        destination,
                        memory,
                    },
                ),
                None => unknown_route(route),
            },
            Step::Delegate {
                to_agent,
                tools,
                depth,
            } => self.decide_delegate(task, to_agent, tools, depth),
        }
    }

    fn decide_start_task(&self, task: &TaskContext, ttl_seconds: u64) -> Outcome {
        let description = "starting a task".to_owned();
        let Ok(ttl) = i64::try_from(ttl_seconds) else {
            let error = format!("ttl_seconds {ttl_seconds} is larger than {}", i64::MAX);
            return request_failure(&description, error);
        };
        let tools = task
            .tools
            .iter()
            .map(|tool| RestrictedExpression::new_string(tool.clone()));
        let context = vec![
            ("intent".to_owned(), string(&task.intent)),
            ("user".to_owned(), string(&task.user)),
            ("tools".to_owned(), RestrictedExpression::new_set(tools)),
            (
                "ttl_seconds".to_owned(),
                RestrictedExpression::new_long(ttl),
            ),
        ];
        let parts = StepParts {
            action: &self.start_task,
            plain: None,
            resource: self.names.uid(&self.names.gateway, GATEWAY_ID),
            context,
            entities: vec![Entity::with_uid(
                self.names.uid(&self.names.gateway, GATEWAY_ID),
            )],
            description,
        };
        self.evaluate(task, parts)
    }

    fn decide_delegate(
        &self,
        task: &TaskContext,
        to_agent: &str,
        tools: &[String],
        depth: u32,
    ) -> Outcome {
        let description = format!("delegating to {to_agent}");
        let task_record = match task_record(task) {
            Ok(record) => record,
            Err(error) => return request_failure(&description, error),
        };
        let resource = self.names.uid(&self.names.agent, to_agent);
        let trust_domain = to_agent
            .strip_prefix("spiffe://")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default();
        let entity = match Entity::new_with_tags(
            resource.clone(),
            [("trust_domain".to_owned(), string(trust_domain))],
            [],
            [],
        ) {
            Ok(entity) => entity,
            Err(error) => return request_failure(&description, error.to_string()),
        };
        let tools = tools
            .iter()
            .map(|tool| RestrictedExpression::new_string(tool.clone()));
        let parts = StepParts {
            action: &self.delegate,
            plain: None,
            resource,
            context: vec![
                ("task".to_owned(), task_record),
                ("tools".to_owned(), RestrictedExpression::new_set(tools)),
                (
                    "depth".to_owned(),
                    RestrictedExpression::new_long(i64::from(depth)),
                ),
            ],
            entities: if to_agent == task.agent {
                Vec::new()
            } else {
                vec![entity]
            },
            description,
        };
        self.evaluate(task, parts)
    }

    fn decide_list_tool(&self, task: &TaskContext, tool: &CompiledTool) -> Outcome {
        let description = format!("listing tool {}", tool.uid.id().unescaped());
        let task_record = match task_record(task) {
            Ok(record) => record,
            Err(error) => return request_failure(&description, error),
        };
        let parts = StepParts {
            action: &tool.list,
            plain: None,
            resource: tool.uid.clone(),
            context: vec![("task".to_owned(), task_record)],
            entities: vec![tool.entity.clone()],
            description,
        };
        self.evaluate(task, parts)
    }

    fn decide_call_tool(
        &self,
        task: &TaskContext,
        tool: &CompiledTool,
        arguments: &Value,
        model_requested: bool,
        memory: &crate::TaskMemory,
    ) -> Outcome {
        let qualified = tool.uid.id().unescaped();
        let description = format!("calling tool {qualified} with these arguments");
        let converted = match convert_arguments(&tool.arguments, arguments, &self.names.path) {
            Ok(converted) => converted,
            Err(error) => {
                let message = error.message(qualified);
                return Outcome {
                    decision: Decision::Deny,
                    policy_ids: vec![ARGUMENTS_POLICY_ID.to_owned()],
                    reason: message.clone(),
                    errors: vec![message],
                    arguments: None,
                };
            }
        };
        let task_record = match task_record(task) {
            Ok(record) => record,
            Err(error) => return request_failure(&description, error),
        };
        let added: Vec<(String, i64)> = tool
            .definition
            .sum_arguments
            .iter()
            .filter_map(|name| {
                let units = crate::sum_units(converted.forwarded.get(name)?)?;
                Some((name.clone(), units))
            })
            .collect();
        // A negative amount would lower the running sum that caps rely on.
        if let Some((name, _)) = added.iter().find(|(_, units)| *units < 0) {
            let message = format!(
                "argument \"{name}\" of tool {qualified} is summed per task and must not be negative"
            );
            return Outcome {
                decision: Decision::Deny,
                policy_ids: vec![ARGUMENTS_POLICY_ID.to_owned()],
                reason: message.clone(),
                errors: vec![message],
                arguments: None,
            };
        }
        let memory_record = match self.memory_record(memory, &added) {
            Ok(record) => record,
            Err(error) => return request_failure(&description, error),
        };
        let mut entities = vec![tool.entity.clone()];
        entities.extend(self.path_entities(&converted.paths));
        let plain = tool
            .call
            .guarded
            .as_ref()
            .and_then(|guarded| guarded.select(&converted.located_paths));
        let parts = StepParts {
            action: &tool.call,
            plain,
            resource: tool.uid.clone(),
            context: vec![
                ("task".to_owned(), task_record),
                ("arguments".to_owned(), converted.record),
                (
                    "model_requested".to_owned(),
                    RestrictedExpression::new_bool(model_requested),
                ),
                ("memory".to_owned(), memory_record),
            ],
            entities,
            description,
        };
        let mut outcome = self.evaluate(task, parts);
        outcome.arguments = Some(converted.forwarded);
        outcome
    }

    fn decide_call_model(&self, task: &TaskContext, call: &ModelCall<'_>) -> Outcome {
        let description = format!("calling model {} of provider {}", call.model, call.provider);
        let task_record = match task_record(task) {
            Ok(record) => record,
            Err(error) => return request_failure(&description, error),
        };
        let resource = self.names.uid(
            &self.names.model,
            &format!("{}/{}", call.provider, call.model),
        );
        let entity = Entity::new_with_tags(
            resource.clone(),
            [
                ("provider".to_owned(), string(call.provider)),
                ("name".to_owned(), string(call.model)),
            ],
            [],
            [],
        );
        let entity = match entity {
            Ok(entity) => entity,
            Err(error) => return request_failure(&description, error.to_string()),
        };
        let usage = RestrictedExpression::new_record([
            (
                "calls".to_owned(),
                RestrictedExpression::new_long(call.usage.calls),
            ),
            (
                "input_tokens".to_owned(),
                RestrictedExpression::new_long(call.usage.input_tokens),
            ),
            (
                "output_tokens".to_owned(),
                RestrictedExpression::new_long(call.usage.output_tokens),
            ),
            (
                "total_tokens".to_owned(),
                RestrictedExpression::new_long(call.usage.total_tokens()),
            ),
        ]);
        let usage = match usage {
            Ok(usage) => usage,
            Err(error) => return request_failure(&description, error.to_string()),
        };
        let tools = call
            .tools
            .iter()
            .map(|tool| RestrictedExpression::new_string(tool.clone()));
        let parts = StepParts {
            action: &self.call_model,
            plain: None,
            resource,
            context: vec![
                ("task".to_owned(), task_record),
                ("provider".to_owned(), string(call.provider)),
                ("model".to_owned(), string(call.model)),
                (
                    "stream".to_owned(),
                    RestrictedExpression::new_bool(call.stream),
                ),
                (
                    "max_tokens".to_owned(),
                    RestrictedExpression::new_long(call.max_tokens),
                ),
                ("tools".to_owned(), RestrictedExpression::new_set(tools)),
                ("usage".to_owned(), usage),
            ],
            entities: vec![entity],
            description,
        };
        self.evaluate(task, parts)
    }

    fn decide_http(
        &self,
        task: &TaskContext,
        route: &CompiledRoute,
        call: &HttpCall<'_>,
    ) -> Outcome {
        let route_name = route.uid.id().unescaped();
        let description = format!("{} {} on route {route_name}", call.method, call.path);
        let task_record = match task_record(task) {
            Ok(record) => record,
            Err(error) => return request_failure(&description, error),
        };
        // Declared parameters by name; a repeated one shows its first value.
        let mut declared: Vec<(String, RestrictedExpression)> = Vec::new();
        for name in &route.query_params {
            if let Some((_, value)) = call.query.iter().find(|(key, _)| key == name) {
                declared.push((name.clone(), string(value)));
            }
        }
        let query = match RestrictedExpression::new_record(declared) {
            Ok(query) => query,
            Err(error) => return request_failure(&description, error.to_string()),
        };
        let names: BTreeSet<&str> = call.query.iter().map(|(key, _)| key.as_str()).collect();
        let destination = RestrictedExpression::new_record([
            ("scheme".to_owned(), string(call.destination.scheme)),
            ("host".to_owned(), string(call.destination.host)),
            (
                "port".to_owned(),
                RestrictedExpression::new_long(i64::from(call.destination.port)),
            ),
        ]);
        let destination = match destination {
            Ok(destination) => destination,
            Err(error) => return request_failure(&description, error.to_string()),
        };
        let path_uid = self.names.uid(&self.names.path, call.path);
        let mut context = vec![
            ("task".to_owned(), task_record),
            ("method".to_owned(), string(call.method)),
            (
                "path".to_owned(),
                RestrictedExpression::new_entity_uid(path_uid),
            ),
            ("path_text".to_owned(), string(call.path)),
            ("query".to_owned(), query),
            (
                "query_names".to_owned(),
                RestrictedExpression::new_set(names.into_iter().map(string)),
            ),
            (
                "has_body".to_owned(),
                RestrictedExpression::new_bool(call.has_body),
            ),
            ("content_type".to_owned(), string(call.content_type)),
            ("destination".to_owned(), destination),
        ];
        match self.memory_record(call.memory, &[]) {
            Ok(record) => context.push(("memory".to_owned(), record)),
            Err(error) => return request_failure(&description, error),
        }
        let mut entities = vec![route.entity.clone()];
        let mut paths = vec![call.path.to_owned()];
        let mut forwarded = None;
        if let Some(body_type) = &route.body
            && call.body.is_object()
        {
            match convert_arguments(body_type, call.body, &self.names.path) {
                Ok(converted) => {
                    context.push(("body".to_owned(), converted.record));
                    paths.extend(converted.paths);
                    forwarded = Some(converted.forwarded);
                }
                Err(error) => {
                    let message = error.body_message(route_name);
                    return Outcome {
                        decision: Decision::Deny,
                        policy_ids: vec![ARGUMENTS_POLICY_ID.to_owned()],
                        reason: message.clone(),
                        errors: vec![message],
                        arguments: None,
                    };
                }
            }
        }
        entities.extend(self.path_entities(&paths));
        let parts = StepParts {
            action: &route.policies,
            plain: None,
            resource: route.uid.clone(),
            context,
            entities,
            description,
        };
        let mut outcome = self.evaluate(task, parts);
        outcome.arguments = forwarded;
        outcome
    }

    /// Builds `context.memory`: the task tree's labels, calls, calls per
    /// class (every known class, 0 when unused), and its sums before and
    /// with this call's `added` amounts.
    fn memory_record(
        &self,
        memory: &crate::TaskMemory,
        added: &[(String, i64)],
    ) -> Result<RestrictedExpression, String> {
        let labels = memory.labels.iter().map(|label| string(label));
        let class_calls = self.memory.classes.iter().map(|class| {
            let count = memory.class_calls.get(class).copied().unwrap_or(0);
            (class.clone(), RestrictedExpression::new_long(count))
        });
        let class_calls =
            RestrictedExpression::new_record(class_calls).map_err(|error| error.to_string())?;
        let sum = |with_call: bool| {
            let entries = self.memory.sums.iter().map(|name| {
                let mut units = memory.sums.get(name).copied().unwrap_or(0);
                if with_call {
                    for (added_name, amount) in added {
                        if added_name == name {
                            units = units.saturating_add(*amount);
                        }
                    }
                }
                (
                    name.clone(),
                    RestrictedExpression::new_decimal(decimal_text(units)),
                )
            });
            RestrictedExpression::new_record(entries).map_err(|error| error.to_string())
        };
        RestrictedExpression::new_record([
            ("labels".to_owned(), RestrictedExpression::new_set(labels)),
            (
                "calls".to_owned(),
                RestrictedExpression::new_long(memory.calls),
            ),
            ("class_calls".to_owned(), class_calls),
            ("sums".to_owned(), sum(false)?),
            ("sums_with_call".to_owned(), sum(true)?),
        ])
        .map_err(|error| error.to_string())
    }

    fn decide_read_resource(&self, task: &TaskContext, server: &str, uri: &str) -> Outcome {
        let description = format!("reading resource {uri} of server {server}");
        let task_record = match task_record(task) {
            Ok(record) => record,
            Err(error) => return request_failure(&description, error),
        };
        let server_uid = self.names.uid(&self.names.server, server);
        let resource = self
            .names
            .uid(&self.names.resource, &format!("{server}__{uri}"));
        let entity = Entity::new_with_tags(
            resource.clone(),
            [("uri".to_owned(), string(uri))],
            [server_uid.clone()],
            [],
        );
        let entity = match entity {
            Ok(entity) => entity,
            Err(error) => return request_failure(&description, error.to_string()),
        };
        let parts = StepParts {
            action: &self.read_resource,
            plain: None,
            resource,
            context: vec![
                ("task".to_owned(), task_record),
                ("uri".to_owned(), string(uri)),
                ("server".to_owned(), string(server)),
            ],
            entities: vec![entity],
            description,
        };
        self.evaluate(task, parts)
    }

    fn decide_get_prompt(&self, task: &TaskContext, server: &str, name: &str) -> Outcome {
        let description = format!("getting prompt {name} of server {server}");
        let task_record = match task_record(task) {
            Ok(record) => record,
            Err(error) => return request_failure(&description, error),
        };
        let server_uid = self.names.uid(&self.names.server, server);
        let resource = self
            .names
            .uid(&self.names.prompt, &format!("{server}__{name}"));
        let entity = Entity::new_with_tags(
            resource.clone(),
            [("name".to_owned(), string(name))],
            [server_uid.clone()],
            [],
        );
        let entity = match entity {
            Ok(entity) => entity,
            Err(error) => return request_failure(&description, error.to_string()),
        };
        let parts = StepParts {
            action: &self.get_prompt,
            plain: None,
            resource,
            context: vec![
                ("task".to_owned(), task_record),
                ("server".to_owned(), string(server)),
            ],
            entities: vec![entity],
            description,
        };
        self.evaluate(task, parts)
    }

    fn decide_server_request(
        &self,
        task: &TaskContext,
        server: &str,
        method: &str,
        tool: &str,
    ) -> Outcome {
        let description = format!("relaying {method} from server {server} to the agent");
        let task_record = match task_record(task) {
            Ok(record) => record,
            Err(error) => return request_failure(&description, error),
        };
        let resource = self.names.uid(&self.names.server, server);
        let parts = StepParts {
            action: &self.server_request,
            plain: None,
            resource: resource.clone(),
            context: vec![
                ("task".to_owned(), task_record),
                ("server".to_owned(), string(server)),
                ("method".to_owned(), string(method)),
                ("tool".to_owned(), string(tool)),
            ],
            entities: vec![Entity::new_no_attrs(resource, [].into())],
            description,
        };
        self.evaluate(task, parts)
    }

    /// Returns one `Warden::Path` entity per distinct path, with every
    /// ancestor directory as a parent, so that `path in Path::"/srv"` holds
    /// for every path below `/srv` and `/srv/data_private` is not in
    /// `/srv/data`. The ancestor directories themselves are not added as
    /// entities, because policies only test argument paths with `in`.
    fn path_entities(&self, paths: &[String]) -> Vec<Entity> {
        let mut seen = BTreeSet::new();
        let mut entities = Vec::with_capacity(paths.len());
        for path in paths {
            if !seen.insert(path.as_str()) {
                continue;
            }
            let parents = warden_core::path::ancestors(path)
                .into_iter()
                .map(|ancestor| self.names.uid(&self.names.path, &ancestor))
                .collect();
            let uid = self.names.uid(&self.names.path, path);
            entities.push(Entity::new_no_attrs(uid, parents));
        }
        entities
    }

    /// Builds the Cedar request for a step and runs both passes.
    fn evaluate(&self, task: &TaskContext, parts: StepParts<'_>) -> Outcome {
        let description = &parts.description;
        let action = parts.action;
        let (request, entities) =
            match self.build_request(task, action, parts.resource, parts.context, parts.entities) {
                Ok(built) => built,
                Err(error) => return request_failure(description, error),
            };

        let plain_set = parts.plain.as_deref().unwrap_or(&action.plain);
        let plain = self
            .authorizer
            .is_authorized(&request, plain_set, &entities);
        if let Some(outcome) = evaluation_failure(description, plain.diagnostics().errors()) {
            return outcome;
        }
        let matched = sorted_ids(plain.diagnostics().reason());
        if plain.decision() == CedarDecision::Deny {
            return denial(description, &self.texts, matched);
        }

        let hold = self
            .authorizer
            .is_authorized(&request, &action.hold, &entities);
        if let Some(outcome) = evaluation_failure(description, hold.diagnostics().errors()) {
            return outcome;
        }
        let hold_ids = sorted_ids(hold.diagnostics().reason());
        if !hold_ids.is_empty() {
            return hold_outcome(description, &self.texts, hold_ids);
        }

        Outcome {
            decision: Decision::Allow,
            reason: format!(
                "{description} is permitted by policy {}",
                matched.join(", ")
            ),
            policy_ids: matched,
            errors: Vec::new(),
            arguments: None,
        }
    }

    fn build_request(
        &self,
        task: &TaskContext,
        action: &ActionPolicies,
        resource: EntityUid,
        context: Vec<(String, RestrictedExpression)>,
        mut entities: Vec<Entity>,
    ) -> Result<(Request, Entities), String> {
        let principal = self.names.uid(&self.names.agent, &task.agent);
        let agent = Entity::new_with_tags(
            principal.clone(),
            [("trust_domain".to_owned(), string(&task.trust_domain))],
            [],
            [],
        )
        .map_err(|error| error.to_string())?;
        entities.push(agent);
        entities.push(action.entity.clone());

        let pairs =
            std::iter::once(("environment".to_owned(), string(&self.environment))).chain(context);
        let context = Context::from_pairs(pairs).map_err(|error| error.to_string())?;
        // The context and entities are built from the same argument types
        // that generated the schema, so release builds skip Cedar's schema
        // check, which costs about 4 µs per request on a 2-core test VM.
        // Debug builds, and so the unit tests, check every request. A
        // mismatch that slipped through would make evaluation fail, which
        // denies.
        let schema = cfg!(debug_assertions).then_some(&self.schema);
        let request = Request::new(principal, action.uid.clone(), resource, context, schema)
            .map_err(|error| error.to_string())?;
        let entities = closed_entities(entities)?;
        Ok((request, entities))
    }
}

/// Builds the request's entity store without computing its transitive
/// closure, which took about half of a decision's time.
///
/// Every entity a request carries already lists all of its ancestors as
/// direct parents: a path lists every directory above it, and the tool,
/// action and agent entities have parents (server, action group) that are
/// not themselves in the store. So the closure is complete as built. Debug
/// builds, and so the tests, make Cedar check that claim on every request.
fn closed_entities(entities: Vec<Entity>) -> Result<Entities, String> {
    use cedar_policy_core::entities::{NoEntitiesSchema, TCComputation};
    use cedar_policy_core::extensions::Extensions;

    let tc = if cfg!(debug_assertions) {
        TCComputation::EnforceAlreadyComputed
    } else {
        TCComputation::AssumeAlreadyComputed
    };
    let core = entities.iter().map(|entity| entity.as_ref().clone());
    cedar_policy_core::entities::Entities::from_entities(
        core,
        None::<&NoEntitiesSchema>,
        tc,
        Extensions::all_available(),
    )
    .map(Entities::from)
    .map_err(|error| error.to_string())
}

fn string(value: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(value.to_owned())
}

fn task_record(task: &TaskContext) -> Result<RestrictedExpression, String> {
    let tools = task
        .tools
        .iter()
        .map(|tool| RestrictedExpression::new_string(tool.clone()));
    let agents = task
        .chain
        .iter()
        .map(|agent| RestrictedExpression::new_string(agent.clone()));
    let root_agent = task.chain.first().unwrap_or(&task.agent);
    RestrictedExpression::new_record([
        ("id".to_owned(), string(&task.task_id)),
        ("intent".to_owned(), string(&task.intent)),
        ("user".to_owned(), string(&task.user)),
        ("tools".to_owned(), RestrictedExpression::new_set(tools)),
        (
            "depth".to_owned(),
            RestrictedExpression::new_long(i64::from(task.depth)),
        ),
        ("agents".to_owned(), RestrictedExpression::new_set(agents)),
        ("root_agent".to_owned(), string(root_agent)),
    ])
    .map_err(|error| error.to_string())
}

fn sorted_ids<'a>(ids: impl Iterator<Item = &'a cedar_policy::PolicyId>) -> Vec<String> {
    let mut ids: Vec<String> = ids.map(ToString::to_string).collect();
    ids.sort();
    ids
}

fn unknown_tool(tool: &str) -> Outcome {
    let reason = format!(
        "tool {tool} is not known to Warden; use a tool name from tools/list, \
         which has the form server__tool"
    );
    Outcome {
        decision: Decision::Deny,
        policy_ids: vec![UNKNOWN_TOOL_POLICY_ID.to_owned()],
        reason,
        errors: Vec::new(),
        arguments: None,
    }
}

/// Formats 1/10,000 units as a Cedar decimal literal, e.g. `12.5000`.
fn decimal_text(units: i64) -> String {
    let sign = if units < 0 { "-" } else { "" };
    let magnitude = units.unsigned_abs();
    format!("{sign}{}.{:04}", magnitude / 10_000, magnitude % 10_000)
}

fn unknown_route(route: &str) -> Outcome {
    Outcome {
        decision: Decision::Deny,
        policy_ids: vec![crate::UNKNOWN_ROUTE_POLICY_ID.to_owned()],
        reason: format!("route {route} is not known to Warden"),
        errors: Vec::new(),
        arguments: None,
    }
}

fn request_failure(description: &str, error: String) -> Outcome {
    Outcome {
        decision: Decision::Deny,
        policy_ids: vec![REQUEST_POLICY_ID.to_owned()],
        reason: format!(
            "{description} is denied because Warden could not build the authorization request: {error}"
        ),
        errors: vec![error],
        arguments: None,
    }
}

/// Returns a denial when any policy failed to evaluate.
fn evaluation_failure<'a>(
    description: &str,
    errors: impl Iterator<Item = &'a AuthorizationError>,
) -> Option<Outcome> {
    let mut ids = BTreeSet::new();
    let mut messages = Vec::new();
    for error in errors {
        let AuthorizationError::PolicyEvaluationError(failure) = error;
        ids.insert(failure.policy_id().to_string());
        messages.push(error.to_string());
    }
    if messages.is_empty() {
        return None;
    }
    messages.sort();
    let ids: Vec<String> = ids.into_iter().collect();
    tracing::debug!(policy.ids = ?ids, errors = ?messages, "policy evaluation failed");
    Some(Outcome {
        decision: Decision::Deny,
        reason: format!(
            "{description} is denied because policy {} failed to evaluate; \
             an operator must fix the policy",
            ids.join(", ")
        ),
        policy_ids: ids,
        errors: messages,
        arguments: None,
    })
}

/// Returns the denial by the plain policies: the matching forbids, or no
/// matching permit.
fn denial(
    description: &str,
    texts: &HashMap<String, PolicyTexts>,
    forbids: Vec<String>,
) -> Outcome {
    let reason = if forbids.is_empty() {
        format!("no policy permits {description}")
    } else {
        forbids
            .iter()
            .find_map(|id| texts.get(id).and_then(|t| t.reason.clone()))
            .unwrap_or_else(|| format!("denied by policy {}", forbids.join(", ")))
    };
    Outcome {
        decision: Decision::Deny,
        policy_ids: forbids,
        reason,
        errors: Vec::new(),
        arguments: None,
    }
}

fn hold_outcome(
    description: &str,
    texts: &HashMap<String, PolicyTexts>,
    hold_ids: Vec<String>,
) -> Outcome {
    let reason = hold_ids
        .iter()
        .find_map(|id| texts.get(id).and_then(|t| t.hold.clone()))
        .unwrap_or_else(|| {
            format!(
                "{description} needs a human approval (policy {})",
                hold_ids.join(", ")
            )
        });
    Outcome {
        decision: Decision::Hold,
        policy_ids: hold_ids,
        reason,
        errors: Vec::new(),
        arguments: None,
    }
}
