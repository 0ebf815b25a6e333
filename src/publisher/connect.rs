//! One broker connection with one confirm-mode channel, the exchange (and, when configured, a
//! queue bound to it) declared, all within `connect_timeout`.

use lapin::options::{ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use super::PublishError;
use crate::config::{AmqpConfig, AmqpUrl};

/// Connects to `url`, one of `config.urls`.
pub(super) async fn connect(
    config: &AmqpConfig,
    url: &AmqpUrl,
) -> Result<(Connection, Channel), PublishError> {
    let timeout = config.connect_timeout;
    let setup = async {
        let properties = ConnectionProperties::default().with_connection_name("gate-relay".into());
        let connection = if url.expose().starts_with("amqps://") {
            let tls = tls_config(config)?;
            Connection::connect_with_config(
                url.expose(),
                properties,
                tls,
                lapin::runtime::default_runtime()?,
            )
            .await?
        } else {
            Connection::connect(url.expose(), properties).await?
        };
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channel
            .exchange_declare(
                config.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        if let Some(queue) = &config.declare_queue {
            let options = lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            channel
                .queue_declare(queue.as_str().into(), options, FieldTable::default())
                .await?;
            channel
                .queue_bind(
                    queue.as_str().into(),
                    config.exchange.as_str().into(),
                    "#".into(),
                    lapin::options::QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok::<_, PublishError>((connection, channel))
    };
    tokio::time::timeout(timeout, setup)
        .await
        .map_err(|_| PublishError::Timeout(timeout))?
}

/// For `amqps://`: extra CA certificates (added to the platform's roots) and an optional
/// client certificate. Read at every connect, so renewed files are picked up.
fn tls_config(config: &AmqpConfig) -> Result<lapin::tcp::OwnedTLSConfig, PublishError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| PublishError::Tls(format!("cannot read {}: {}", path.display(), e.kind())))
    };
    let cert_chain = match &config.ca_path {
        Some(path) => Some(
            String::from_utf8(read(path)?)
                .map_err(|_| PublishError::Tls(format!("{} is not PEM text", path.display())))?,
        ),
        None => None,
    };
    let identity = match (&config.client_cert_path, &config.client_key_path) {
        (Some(cert), Some(key)) => Some(lapin::tcp::OwnedIdentity::PKCS8 {
            pem: read(cert)?,
            key: read(key)?,
        }),
        _ => None,
    };
    Ok(lapin::tcp::OwnedTLSConfig {
        identity,
        cert_chain,
    })
}
